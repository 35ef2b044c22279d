"""PagerDuty: config.py (one `pagerduty_configs` entry) and channel.py (Events API v2)."""
