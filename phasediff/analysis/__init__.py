"""Analyses built on the process engine (mixing)."""
