"""Mechanisms shared by every service: no hospital concepts live here."""
