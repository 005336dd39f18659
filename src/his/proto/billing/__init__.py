"""Generated from proto/ by tools/protogen.py (make proto). Do not edit."""
