"""Slack: config.py (one `slack_configs` entry) and channel.py (Web API or incoming webhook)."""
