"""Email: config.py (one `email_configs` entry) and channel.py (SMTP, text + HTML, threads)."""
