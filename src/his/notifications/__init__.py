"""notifications: templates, channels, delivery history, preferences."""
