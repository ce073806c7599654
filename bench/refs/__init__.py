"""The references each scenario is measured against, kept out of the application."""
