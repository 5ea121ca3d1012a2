from django.apps import AppConfig


class IssuanceConfig(AppConfig):
    name = "apps.issuance"
    verbose_name = "Issuance"
