"""Scoping fails closed (docs/architecture.md, "Tenancy"): every model of ours is scoped to
exactly one organisation's rows, and a model nobody declared a path for is refused by name."""

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import models
from django.test.utils import isolate_apps
from django.utils import timezone

from apps.audit import services as audit_services
from apps.clients.models import ClientApp
from apps.issuance.models import ActiveTokenSlot, QuotaCounter
from apps.tenants.admin_scoping import ScopedChoicesMixin
from apps.tenants.models import Organization
from apps.tenants.scoping import NoOrganizationPath, scope_to_organization
from tests.conftest import TenantWorld, make_world
from tests.factories import OrganizationFactory

# Platform state that no organisation owns as a row; say why when adding one.
NOT_ORGANIZATION_OWNED = {
    QuotaCounter: "the database quota engine's counters: the key string names the organisation",
}

OUR_MODELS = sorted(
    (
        model
        for config in apps.get_app_configs()
        if config.name.startswith("apps.")
        for model in config.get_models()
    ),
    key=lambda model: model._meta.label,
)
SCOPED_MODELS = [model for model in OUR_MODELS if model not in NOT_ORGANIZATION_OWNED]


def build_world(name: str) -> TenantWorld:
    """conftest's world with its audit trail, plus the rows the tasks and quota engine write."""
    world = make_world(name, with_audit_trail=True)
    audit_services.usage_rollup(
        tally=audit_services.RunTally(), now=timezone.now() + timedelta(minutes=2)
    )
    ActiveTokenSlot.objects.create(
        organization=world.organization,
        grant_public_id=world.grant.public_id,
        expires_at=world.grant.expire_time,
    )
    return world


def row_ids() -> dict[type[models.Model], set]:
    return {model: set(model._base_manager.values_list("pk", flat=True)) for model in SCOPED_MODELS}


@pytest.fixture
def rows_of(db) -> dict[Organization, dict[type[models.Model], set]]:
    """Alpha and Bravo, built as conftest's two_orgs builds them, with each organisation's
    rows told apart by which world's building created them (no scoping code involved)."""
    before = row_ids()
    alpha = build_world("Alpha")
    after_alpha = row_ids()
    bravo = build_world("Bravo")
    after_bravo = row_ids()
    return {
        alpha.organization: {m: after_alpha[m] - before[m] for m in SCOPED_MODELS},
        bravo.organization: {m: after_bravo[m] - after_alpha[m] for m in SCOPED_MODELS},
    }


@pytest.mark.parametrize("model", SCOPED_MODELS, ids=lambda model: model._meta.label)
def test_scoping_keeps_exactly_one_organizations_rows(rows_of, model):
    for organization, owned in rows_of.items():
        scoped = scope_to_organization(model._default_manager.all(), organization)

        assert owned[model], (
            f"the worlds give {organization} no {model._meta.label}: extend build_world()"
        )
        assert set(scoped.values_list("pk", flat=True)) == owned[model]


def test_every_choice_the_admin_scopes_comes_from_a_model_checked_here():
    """Foreign-key and many-to-many choices of every scoped admin and inline are scoped."""
    checked = {Organization, *SCOPED_MODELS}
    for model, model_admin in admin.site._registry.items():
        inlines = [inline(model, admin.site) for inline in model_admin.inlines]
        for scoped_admin in [model_admin, *inlines]:
            if not isinstance(scoped_admin, ScopedChoicesMixin):
                continue
            opts = scoped_admin.model._meta
            for field in [*opts.fields, *opts.many_to_many]:
                if field.is_relation:
                    assert field.related_model in checked, (
                        f"{type(scoped_admin).__name__}.{field.name} offers "
                        f"{field.related_model._meta.label}, which no test here scopes"
                    )


class Throwaway(models.Model):
    """A model someone might add tomorrow: in the tenants app, with no table."""

    class Meta:
        abstract = True
        app_label = "tenants"
        managed = False

    def __str__(self) -> str:
        return f"throwaway {self.pk}"


@pytest.fixture
def isolated_apps():
    """Throwaway models go to a registry of their own, not the one the other tests walk."""
    with isolate_apps("apps.tenants"):
        yield


def pathless_models() -> dict[str, type[models.Model]]:
    """The ways a new model can have no known path to its organisation."""

    class OwnedThroughItsApp(Throwaway):
        client_app = models.ForeignKey(ClientApp, on_delete=models.CASCADE)

    class OrganizationByName(Throwaway):
        organization = models.CharField(max_length=50)

    class PathToTheWrongModel(Throwaway):
        client_app = models.ForeignKey(ClientApp, on_delete=models.CASCADE)
        organization_path = "client_app"

    class PathThroughNothing(Throwaway):
        organization_path = "app__organization"

    pathless = (OwnedThroughItsApp, OrganizationByName, PathToTheWrongModel, PathThroughNothing)
    return {model.__name__: model for model in pathless}


@pytest.mark.usefixtures("isolated_apps")
@pytest.mark.parametrize(
    "name",
    ["OwnedThroughItsApp", "OrganizationByName", "PathToTheWrongModel", "PathThroughNothing"],
)
def test_a_model_without_a_path_to_its_organization_is_refused_by_name(name):
    model = pathless_models()[name]

    with pytest.raises(NoOrganizationPath, match=rf"tenants\.{name}\b"):
        scope_to_organization(model._default_manager.all(), OrganizationFactory.build())


@pytest.mark.usefixtures("isolated_apps")
def test_a_declared_path_scopes_through_the_parent():
    class OwnedThroughItsApp(Throwaway):
        client_app = models.ForeignKey(ClientApp, on_delete=models.CASCADE)
        organization_path = "client_app__organization"

    organization = OrganizationFactory.build(pk=7)
    rows = OwnedThroughItsApp._default_manager

    scoped = scope_to_organization(rows.all(), organization)

    assert str(scoped.query) == str(rows.filter(client_app__organization=organization).query)
