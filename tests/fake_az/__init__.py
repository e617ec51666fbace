"""A fake Azure CLI for running scripts/setup-entra.sh under test."""
