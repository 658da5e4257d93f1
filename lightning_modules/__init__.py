"""Lightning systems and data for TAS."""
