"""A small app wired with dependency-injector, used by the monque_di tests."""
