"""alert-router: an Alertmanager webhook router and notifier."""

__version__ = "0.1.0"
