"""Chat operations: commands from Telegram and Slack (/ack, /unack, /alerts, /help)."""
