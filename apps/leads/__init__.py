"""Leads as pool A stores them (models: Lead, its tier and status): normalization, scoring
(config/scoring.yaml), the bulk upsert of a batch (services), quarantine of a lead that fails
alone, and the reads of a lead's status."""
