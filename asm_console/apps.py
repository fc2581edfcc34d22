from django.apps import AppConfig


class AsmConsoleConfig(AppConfig):
    name = "asm_console"
    verbose_name = "ASM Console"
