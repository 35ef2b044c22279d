"""Telegram: config.py (one `telegram_configs` entry) and channel.py (Bot API client, HTML)."""
