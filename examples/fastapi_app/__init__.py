"""FastAPI + PyMongo async + monque_di: run with ``python -m examples.fastapi_app``."""
