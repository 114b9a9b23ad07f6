#!/usr/bin/env python
"""Django's command-line utility for the writebehind example project.

export WRITEBEHIND_DSN=postgresql://app@db/app   # becomes DATABASES["default"]
python manage.py migrate
python manage.py check --database default          # writebehind checks its tables too
python manage.py test pageviews                    # on a test database
python manage.py runserver
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
