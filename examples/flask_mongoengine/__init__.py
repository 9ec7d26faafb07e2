"""Flask + mongoengine + monque_di: a web process that enqueues and a worker process that
processes, both from one container.

    export MONGODB_URI=mongodb://localhost:27017
    flask --app examples.flask_mongoengine.web run        # the web process (port 5000)
    python -m examples.flask_mongoengine.worker           # the worker process (SIGTERM stops it)

In production run the web app under a WSGI server, e.g.
``gunicorn 'examples.flask_mongoengine.web:create_app()'``.
"""
