"""dependency-injector integration for Monque."""
