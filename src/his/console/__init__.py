"""The staff console: pages for the people who run the hospital, served behind the gateway
(docs/adr/0027-the-console-a-backend-for-frontend.md)."""
