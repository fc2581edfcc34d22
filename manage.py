#!/usr/bin/env python
"""Django's command-line utility for ASM Console."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asm_console.settings")
    from django.core.management import execute_from_command_line

    from asm_console.env import SettingError

    try:
        execute_from_command_line(sys.argv)
    except SettingError as exc:
        # A bad setting is the operator's to fix: say which one, without a traceback.
        sys.stderr.write(f"ASM Console cannot start: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
