"""Flask + mongoengine + monque_di, with a separate worker process from the same container."""
