from django.core.wsgi import get_wsgi_application

# DJANGO_SETTINGS_MODULE=bench.refs.drf_usual.settings is set by the bench for this process.
application = get_wsgi_application()
