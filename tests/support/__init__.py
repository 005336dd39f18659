"""Helpers shared by integration and reliability tests."""
