from django.apps import AppConfig


class IssuanceConfig(AppConfig):
    name = "apps.issuance"
    verbose_name = "Issuance"

    def ready(self) -> None:
        """Choose where issuance's statements run once, at startup (apps/issuance/store/)."""
        from apps.issuance.store import issuance_store

        issuance_store()
