"""A cross-organisation matrix generated over every admin on the admin site
(docs/architecture.md, "Tenancy").

Every ModelAdmin registered on ``django.contrib.admin.site`` joins automatically:

* the Organization admin and every admin of a tenant-owned model (``is_tenant_owned``) are
  checked as each Alpha role that opens the admin, and as the operator with Alpha active, for
  never showing, changing or naming Bravo's rows;
* every other admin (users, allauth, sites, groups, ...) must refuse every tenant role;
* autocomplete is checked for every foreign key of every registered model whose target admin
  has ``search_fields``.

The checks are plain functions that raise AssertionError, so the meta-tests at the bottom can
unscope one admin and prove that the matrix notices.
"""

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import models, transaction
from django.db.models import Max
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.issuance import selectors as issuance_selectors
from apps.issuance.selectors import profiles_for_caller
from apps.policies.models import LiveConstraintProfile
from apps.tenants import views as tenant_views
from apps.tenants.models import Domain, Invitation, Membership, Organization, Role, User
from apps.tenants.scoping import is_tenant_owned
from tests.conftest import TenantWorld, make_world
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TENANT_ROLES = {"auditor": Role.AUDITOR, "admin": Role.ADMIN, "owner": Role.OWNER}
OPERATOR = "operator-in-alpha"  # the operator with Alpha active must see only Alpha too
IDENTITIES = [*TENANT_ROLES, OPERATOR]


# --- what the matrix is generated from ----------------------------------------------------


def registered_models() -> list[type[models.Model]]:
    return sorted(admin.site._registry, key=lambda model: model._meta.label_lower)


def is_scoped(model) -> bool:
    return model is Organization or is_tenant_owned(model)


SCOPED_MODELS = [model for model in registered_models() if is_scoped(model)]
UNSCOPED_MODELS = [model for model in registered_models() if not is_scoped(model)]
# Every model a write through some admin could touch, registered or not.
SNAPSHOT_MODELS = [model for model in apps.get_models() if is_scoped(model)] + [User]


def model_admin(model) -> admin.ModelAdmin:
    return admin.site._registry[model]


def forward_relations(model) -> list[models.Field]:
    return [f for f in [*model._meta.fields, *model._meta.many_to_many] if f.is_relation]


@dataclass(frozen=True)
class AdminUrl:
    name: str  # the URL name, without the "admin:" namespace
    kwargs: tuple[str, ...]  # names of the object-id parameters, empty for list/add views
    label: str  # the name without the model's prefix: "change", "history", ...


def admin_urls(model) -> list[AdminUrl]:
    """Every named URL a model admin serves (the unnamed catch-all only redirects)."""
    prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
    return [
        AdminUrl(pattern.name, tuple(pattern.pattern.converters), pattern.name.removeprefix(prefix))
        for pattern in model_admin(model).get_urls()
        if pattern.name
    ]


def object_urls(model) -> list[AdminUrl]:
    return [url for url in admin_urls(model) if url.kwargs]


def url_for(model, view: str, pk=None) -> str:
    opts = model._meta
    args = [pk] if pk is not None else []
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def reverse_admin_url(url: AdminUrl, pk=None) -> str:
    return reverse(f"admin:{url.name}", kwargs={key: pk for key in url.kwargs})


# --- who is acting, and whose rows are whose ----------------------------------------------


@dataclass
class Actor:
    client: Client
    identity: str
    alpha: TenantWorld
    bravo: TenantWorld

    @property
    def is_operator(self) -> bool:
        return self.identity == OPERATOR


def sign_in(client, identity, two_orgs, operator) -> Actor:
    alpha, bravo = two_orgs
    if identity == OPERATOR:
        client.force_login(operator)
        switched = client.post(
            reverse("admin:switch_organization"), {"organization": alpha.organization.pk}
        )
        assert switched.status_code == 302, switched
    else:
        client.force_login(alpha.users[TENANT_ROLES[identity]])
    return Actor(client, identity, alpha, bravo)


@pytest.fixture(scope="module")
def shared_world(django_db_setup, django_db_blocker):
    """Alpha, Bravo and the operator, built once for this module.

    Building them for each of the hundreds of checks took half the runtime. Like Django's
    ``setUpTestData``: an outer transaction holds them, each test runs in a savepoint of its
    own (pytest-django's ``db``), and the whole lot is rolled back when the module is done.
    """
    with django_db_blocker.unblock(), transaction.atomic():
        worlds = (
            make_world("Alpha", with_audit_trail=True),
            make_world("Bravo", with_audit_trail=True),
        )
        operator = UserFactory(username="operator", is_superuser=True, is_staff=True)
        yield worlds, operator
        transaction.set_rollback(True)


@pytest.fixture
def two_orgs(shared_world, db):
    """conftest's two_orgs, from the module's shared copy (the checks only read it)."""
    return shared_world[0]


@pytest.fixture
def operator(shared_world, db):
    return shared_world[1]


@pytest.fixture
def actor_for(client, two_orgs, operator):
    return lambda identity: sign_in(client, identity, two_orgs, operator)


def owned_by(model, world: TenantWorld):
    organization = world.organization
    if model is Organization:
        return Organization.objects.filter(pk=organization.pk)
    if issubclass(model, User):
        return User.objects.filter(memberships__organization=organization)
    if is_tenant_owned(model):
        return model._default_manager.filter(organization=organization)
    return model._default_manager.none()


def bravo_pks(model, actor: Actor) -> set:
    """Rows only Bravo owns (a user in both organisations is not Bravo's secret)."""
    queryset = owned_by(model, actor.bravo)
    if issubclass(model, User):
        queryset = queryset.exclude(memberships__organization=actor.alpha.organization)
    return set(queryset.values_list("pk", flat=True))


def sample(model, world: TenantWorld):
    obj = owned_by(model, world).order_by("pk").first()
    if obj is None:
        raise AssertionError(
            f"the two_orgs fixture gives {world.organization} no {model._meta.label}: extend "
            "tests/conftest.py make_world() so the admin matrix can check this model"
        )
    return obj


def missing_pk(model):
    if isinstance(model._meta.pk, models.IntegerField | models.AutoField):
        return (model._default_manager.aggregate(top=Max("pk"))["top"] or 0) + 1000
    return "does-not-exist"


def bravo_snapshot(actor: Actor) -> dict:
    return {
        model._meta.label: list(owned_by(model, actor.bravo).order_by("pk").values())
        for model in SNAPSHOT_MODELS
    }


def all_pks() -> dict:
    return {
        model: set(model._default_manager.values_list("pk", flat=True)) for model in SNAPSHOT_MODELS
    }


def bravo_references(obj, actor: Actor) -> list[str]:
    found = []
    if isinstance(obj, Organization) and obj.pk == actor.bravo.organization.pk:
        found.append("is Bravo")
    for relation in forward_relations(type(obj)):
        if relation.many_to_many:
            pks = set(getattr(obj, relation.name).values_list("pk", flat=True))
        else:
            pks = {getattr(obj, relation.attname)} - {None}
        if pks & bravo_pks(relation.related_model, actor):
            found.append(relation.name)
    return found


def assert_no_new_row_points_at_bravo(actor: Actor, before: dict, what: str) -> None:
    for model, pks in all_pks().items():
        for obj in model._default_manager.filter(pk__in=pks - before[model]):
            references = bravo_references(obj, actor)
            assert not references, (
                f"{what} as {actor.identity} created {model._meta.label} {obj!r} pointing at "
                f"Bravo through {references}"
            )


# --- requests and pages ------------------------------------------------------------------

SWITCHER = re.compile(r'<form id="org-switcher".*?</form>', re.DOTALL)


def fetch(actor: Actor, method: str, url: str, data=None, *, follow=False):
    """One request; an exception in the view (a 500 for the user) fails the check."""
    try:
        return getattr(actor.client, method)(url, data or {}, follow=follow)
    except Exception as error:
        raise AssertionError(
            f"{method.upper()} {url} as {actor.identity} raised {error!r}"
        ) from error


def page_text(actor: Actor, response) -> str:
    text = response.content.decode(errors="replace")
    if actor.is_operator:  # the operator's switcher lists every organisation, by design
        text = SWITCHER.sub("", text)
    return text


def assert_names_no_bravo(actor: Actor, response, what: str) -> None:
    text = page_text(actor, response)
    hit = text.lower().find("bravo")
    assert hit == -1, (
        f"{what} as {actor.identity} names Bravo: ...{text[max(0, hit - 150) : hit + 80]}..."
    )


def outcome(response) -> tuple:
    """What a user can tell apart: the status and where it redirects to."""
    return (response.status_code, response.get("Location"))


def landing(actor: Actor, response):
    """The page a browser would show after ``response`` (one redirect at most here)."""
    if response.status_code in (301, 302):
        return fetch(actor, "get", response["Location"])
    return response


def context_value(response, key):
    context = response.context
    if context is None:
        return None
    try:
        return context[key]
    except KeyError:
        return None


@dataclass
class FormField:
    kind: str  # an input type, "select" or "textarea"
    values: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    multiple: bool = False


class FormHarvester(HTMLParser):
    """Collects what a browser would submit from the admin's change form."""

    SKIPPED_INPUTS = frozenset({"submit", "button", "image", "file", "reset"})

    def __init__(self, form_id: str):
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.fields: dict[str, FormField] = {}
        self._select: tuple[str, FormField, list[str]] | None = None
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self.inside = attributes.get("id") == self.form_id
        if not self.inside or "disabled" in attributes:
            return
        name = attributes.get("name")
        if tag == "input" and name:
            kind = (attributes.get("type") or "text").lower()
            if kind in self.SKIPPED_INPUTS:
                return
            entry = self.fields.setdefault(name, FormField(kind))
            if kind in ("checkbox", "radio"):
                if "checked" in attributes:
                    entry.values.append(attributes.get("value") or "on")
            else:
                entry.values.append(attributes.get("value") or "")
        elif tag == "select" and name:
            self._select = (name, FormField("select", multiple="multiple" in attributes), [])
        elif tag == "option" and self._select is not None:
            value = attributes.get("value") or ""
            self._select[1].options.append(value)
            if "selected" in attributes:
                self._select[2].append(value)
        elif tag == "textarea" and name:
            self._textarea = (name, [])

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select is not None:
            name, entry, selected = self._select
            if not selected and entry.options and not entry.multiple:
                selected = entry.options[:1]  # what a browser submits for a bare select
            entry.values = selected
            self.fields[name] = entry
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            name, chunks = self._textarea
            self.fields[name] = FormField("textarea", ["".join(chunks).lstrip("\n")])
            self._textarea = None


def harvest(response, model) -> dict[str, FormField]:
    if response.status_code != 200:
        return {}
    parser = FormHarvester(f"{model._meta.model_name}_form")
    parser.feed(response.content.decode())
    return parser.fields


def as_post_data(fields: dict[str, FormField]) -> dict[str, list[str]]:
    return {name: list(entry.values) for name, entry in fields.items()}


def model_field(model, name):
    try:
        return model._meta.get_field(name)
    except Exception:
        return None


def sample_value(db_field, n: int):
    """A value that passes the usual validators, for a blank required input of an add form."""
    if isinstance(db_field, models.EmailField):
        return f"matrix-{n}@alpha.test"
    if isinstance(db_field, models.SlugField):
        return f"matrix-{n}"
    if isinstance(db_field, models.URLField):
        return "https://alpha.test/"
    if isinstance(db_field, models.CharField | models.TextField):
        return f"matrix-{n}.alpha.test"
    if isinstance(db_field, models.IntegerField | models.FloatField | models.DecimalField):
        return "1"
    return None


def fill_blanks(fields: dict[str, FormField], model) -> dict[str, list[str]]:
    data = as_post_data(fields)
    later = timezone.localtime() + timedelta(days=3)
    for n, (name, entry) in enumerate(fields.items()):
        if entry.kind == "select" and not any(entry.values) and not entry.multiple:
            choices = [option for option in entry.options if option]
            if choices:  # a required choice left on "---------"; relations are replaced later
                data[name] = choices[:1]
            continue
        if entry.kind in ("checkbox", "radio", "select", "hidden") or any(entry.values):
            continue
        base, _, part = name.rpartition("_")
        split = model_field(model, base) if part in ("0", "1") else None
        if isinstance(split, models.DateTimeField):  # the admin's split date/time widget
            data[name] = [later.strftime("%Y-%m-%d" if part == "0" else "%H:%M:%S")]
        elif isinstance(db_field := model_field(model, name), models.DateField):
            data[name] = [later.strftime("%Y-%m-%d")]
        elif db_field is not None and not db_field.is_relation:
            value = sample_value(db_field, n)
            if value is not None:
                data[name] = [value]
    return data


def substitute_bravo(data: dict, model, actor: Actor) -> dict:
    """Every relation of the model (form field or not) gets one of Bravo's ids."""
    for relation in forward_relations(model):
        pks = sorted(bravo_pks(relation.related_model, actor))
        if pks:
            data[relation.name] = [str(pks[-1] if relation.related_model is User else pks[0])]
    return data


def mutate(fields: dict[str, FormField], model) -> dict[str, list[str]]:
    """The Alpha change form with every plain value changed, to post at Bravo's row."""
    data = as_post_data(fields)
    for name, entry in fields.items():
        db_field = model_field(model, name)
        if db_field is None or db_field.is_relation:
            continue
        if entry.kind == "select" and not entry.multiple:
            others = [option for option in entry.options if option and option not in entry.values]
            if others:
                data[name] = [others[-1]]
        elif entry.kind in ("text", "email", "url", "textarea") and any(entry.values):
            data[name] = ["m" + entry.values[0]]
    return data


# --- the checks: each raises AssertionError --------------------------------------------


def check_changelist(actor: Actor, model) -> None:
    response = fetch(actor, "get", url_for(model, "changelist"))
    assert response.status_code == 200, f"changelist as {actor.identity}: {response}"
    assert_names_no_bravo(actor, response, f"{model._meta.label} changelist")
    rows = list(context_value(response, "cl").result_list)
    assert sample(model, actor.alpha) in rows, "the changelist does not even list Alpha's rows"
    leaked = {obj.pk for obj in rows} & bravo_pks(model, actor)
    assert not leaked, f"{model._meta.label} changelist as {actor.identity} lists Bravo {leaked}"


def check_object_view(actor: Actor, model, url: AdminUrl) -> None:
    """Bravo's row and a row that does not exist look exactly alike."""
    bravo_obj = sample(model, actor.bravo)
    got = fetch(actor, "get", reverse_admin_url(url, bravo_obj.pk))
    expected = fetch(actor, "get", reverse_admin_url(url, missing_pk(model)))
    assert outcome(got) == outcome(expected), (
        f"{url.name} of Bravo's {bravo_obj!r} as {actor.identity}: {outcome(got)}, "
        f"but a missing row gives {outcome(expected)}"
    )
    assert got.status_code != 200, f"{url.name} as {actor.identity} served Bravo's row"
    page = landing(actor, got)
    assert_names_no_bravo(actor, page, f"{url.name} of Bravo's row")
    if got.status_code == 302:
        assert "exist" in page_text(actor, page), "redirected without a doesn't-exist message"


def check_change_post(actor: Actor, model) -> None:
    bravo_obj = sample(model, actor.bravo)
    alpha_form = fetch(actor, "get", url_for(model, "change", sample(model, actor.alpha).pk))
    data = mutate(harvest(alpha_form, model), model)
    before = bravo_snapshot(actor)
    got = fetch(actor, "post", url_for(model, "change", bravo_obj.pk), data)
    expected = fetch(actor, "post", url_for(model, "change", missing_pk(model)), data)
    assert bravo_snapshot(actor) == before, f"POST change as {actor.identity} changed Bravo"
    assert outcome(got) == outcome(expected), (
        f"POST change of Bravo's row: {outcome(got)}, of a missing row: {outcome(expected)}"
    )
    assert_names_no_bravo(actor, landing(actor, got), "POST change of Bravo's row")


def check_delete_post(actor: Actor, model) -> None:
    bravo_obj = sample(model, actor.bravo)
    before = bravo_snapshot(actor)
    data = {"post": "yes"}
    got = fetch(actor, "post", url_for(model, "delete", bravo_obj.pk), data)
    expected = fetch(actor, "post", url_for(model, "delete", missing_pk(model)), data)
    assert bravo_snapshot(actor) == before, f"POST delete as {actor.identity} changed Bravo"
    assert outcome(got) == outcome(expected), (
        f"POST delete of Bravo's row: {outcome(got)}, of a missing row: {outcome(expected)}"
    )
    assert_names_no_bravo(actor, landing(actor, got), "POST delete of Bravo's row")


def check_actions(actor: Actor, model) -> None:
    """Every action, offered or not, run on Bravo's row selected by id, touches nothing."""
    changelist = fetch(actor, "get", url_for(model, "changelist"))
    action_form = context_value(changelist, "action_form")
    offered = [name for name, _ in action_form.fields["action"].choices] if action_form else []
    declared = [a if isinstance(a, str) else a.__name__ for a in model_admin(model).actions or []]
    bravo_obj = sample(model, actor.bravo)
    for action in dict.fromkeys([*offered, "delete_selected", *declared]):
        if not action:
            continue
        before = bravo_snapshot(actor)
        data = {"action": action, "index": 0, "_selected_action": [bravo_obj.pk], "post": "yes"}
        response = fetch(actor, "post", url_for(model, "changelist"), data)
        assert response.status_code in (200, 302, 403), f"action {action}: {response}"
        assert bravo_snapshot(actor) == before, (
            f"action {action} as {actor.identity} changed Bravo's {bravo_obj!r}"
        )


def check_add_post(actor: Actor, model) -> None:
    """The add form offers no Bravo choice; posting Bravo's ids creates nothing of Bravo's."""
    add_page = fetch(actor, "get", url_for(model, "add"))
    if add_page.status_code == 200:
        assert_names_no_bravo(actor, add_page, f"{model._meta.label} add form")
    data = substitute_bravo(fill_blanks(harvest(add_page, model), model), model, actor)
    before, before_pks = bravo_snapshot(actor), all_pks()
    response = fetch(actor, "post", url_for(model, "add"), data, follow=True)
    assert response.status_code in (200, 403), f"add POST as {actor.identity}: {response}"
    assert bravo_snapshot(actor) == before, f"add POST as {actor.identity} changed Bravo's rows"
    assert_no_new_row_points_at_bravo(actor, before_pks, f"add POST {data}")
    assert_names_no_bravo(actor, response, "the add POST's response")


def check_list_filters(actor: Actor, model) -> None:
    response = fetch(actor, "get", url_for(model, "changelist"))
    assert response.status_code == 200, response
    changelist = context_value(response, "cl")
    for spec in changelist.filter_specs:
        for choice in spec.choices(changelist):
            display = str(choice.get("display", ""))
            assert "bravo" not in display.lower(), (
                f"{model._meta.label} filter {spec.title!r} as {actor.identity} offers {display!r}"
            )
    sidebar = re.search(r'<nav id="changelist-filter".*?</nav>', page_text(actor, response), re.S)
    assert sidebar is None or "bravo" not in sidebar.group(0).lower()


def check_filter_querystring(actor: Actor, model) -> None:
    """Filtering or searching by Bravo's ids through the querystring shows no Bravo row."""
    sample(model, actor.bravo)
    queries = [{"q": "bravo"}]  # the page echoes this term, so only its rows are checked
    for relation in forward_relations(model):
        pks = sorted(bravo_pks(relation.related_model, actor))
        if pks:
            target_pk = relation.related_model._meta.pk.name
            queries.append({f"{relation.name}__{target_pk}__exact": pks[-1]})
    own_bravo = bravo_pks(model, actor)
    for query in queries:
        url = f"{url_for(model, 'changelist')}?{urlencode(query)}"
        response = fetch(actor, "get", url, follow=True)
        assert response.status_code in (200, 400), f"{url} as {actor.identity}: {response}"
        if query.get("q") != "bravo":
            assert_names_no_bravo(actor, response, url)
        changelist = context_value(response, "cl")
        if changelist is not None:
            leaked = {obj.pk for obj in changelist.result_list} & own_bravo
            assert not leaked, f"{url} as {actor.identity} lists Bravo's rows {leaked}"


def check_autocomplete(actor: Actor, source, field_name: str) -> None:
    relation = source._meta.get_field(field_name)
    target = relation.related_model
    forbidden = bravo_pks(target, actor)
    for term in ("", "bravo"):
        query = {
            "app_label": source._meta.app_label,
            "model_name": source._meta.model_name,
            "field_name": field_name,
            "term": term,
        }
        response = fetch(actor, "get", f"{reverse('admin:autocomplete')}?{urlencode(query)}")
        if response.status_code == 403:
            target_page = fetch(actor, "get", url_for(target, "changelist"))
            assert target_page.status_code != 200, (
                f"autocomplete refused {target._meta.label} whose admin {actor.identity} can view"
            )
            continue
        assert response.status_code == 200, f"autocomplete as {actor.identity}: {response}"
        payload = response.json()
        ids = {str(row["id"]) for row in payload["results"]}
        leaked = ids & {str(pk) for pk in forbidden}
        assert not leaked, f"autocomplete {query} as {actor.identity} offers Bravo's {leaked}"
        assert "bravo" not in json.dumps(payload).lower(), f"autocomplete names Bravo: {payload}"
        if term == "" and is_scoped(target):  # control: Alpha's own rows are offered
            assert str(sample(target, actor.alpha).pk) in ids, f"no Alpha row in {payload}"


def check_unscoped_admin_refuses(actor: Actor, model) -> None:
    """A tenant role gets nothing from an admin that is not scoped to organisations."""
    bravo_rows = sorted(bravo_pks(model, actor))
    first = model._default_manager.order_by("pk").first()
    pk = bravo_rows[0] if bravo_rows else (first.pk if first else missing_pk(model))
    before = list(model._default_manager.order_by("pk").values())
    for url in admin_urls(model):
        address = reverse_admin_url(url, pk)
        post = {"post": "yes", "name": "pwned", "action": "delete_selected", "index": 0}
        post["_selected_action"] = [pk]
        for method, data in (("get", None), ("post", post)):
            response = fetch(actor, method, address, data)
            assert response.status_code in (302, 403), (
                f"{method.upper()} {address} as {actor.identity}: {response.status_code}"
            )
            if response.status_code == 302:  # to sign in, or "doesn't exist" for a missing row
                assert response["Location"] in (reverse("admin:login"), reverse("admin:index")) or (
                    response["Location"].startswith(reverse("admin:login") + "?")
                ), response
    assert list(model._default_manager.order_by("pk").values()) == before, (
        f"{actor.identity} changed {model._meta.label} rows through its admin"
    )


def check_list_views(actor: Actor, model) -> None:
    """The admin's own list-level pages (dashboards, exports, lookups) show Alpha only."""
    for url in admin_urls(model):
        if url.kwargs or url.label in ("changelist", "add"):
            continue
        response = fetch(actor, "get", reverse_admin_url(url))
        assert response.status_code in (200, 403), f"{url.name} as {actor.identity}: {response}"
        if response.streaming:
            response = type("Body", (), {"content": b"".join(response.streaming_content)})()
        assert_names_no_bravo(actor, response, url.name)


SCOPED_CHECKS = {
    "changelist": check_changelist,
    "list_views": check_list_views,
    "change_post": check_change_post,
    "delete_post": check_delete_post,
    "actions": check_actions,
    "add_post": check_add_post,
    "list_filters": check_list_filters,
    "filter_querystring": check_filter_querystring,
}


# --- the generated tests -------------------------------------------------------------------


def _scoped_params():
    for model in SCOPED_MODELS:
        for identity in IDENTITIES:
            for check in SCOPED_CHECKS:
                yield pytest.param(
                    model, identity, check, id=f"{model._meta.label_lower}-{identity}-{check}"
                )


def _object_view_params():
    for model in SCOPED_MODELS:
        for url in object_urls(model):
            for identity in IDENTITIES:
                yield pytest.param(
                    model,
                    url,
                    identity,
                    id=f"{model._meta.label_lower}-{identity}-{url.label}_view",
                )


def _autocomplete_params():
    for source in registered_models():
        for relation in forward_relations(source):
            target_admin = admin.site._registry.get(relation.related_model)
            if target_admin is None or not target_admin.search_fields:
                continue
            for identity in IDENTITIES:
                if identity == OPERATOR and not is_scoped(relation.related_model):
                    continue  # accounts etc. are the operator's by design
                yield pytest.param(
                    source,
                    relation.name,
                    identity,
                    id=f"{source._meta.label_lower}.{relation.name}-{identity}-autocomplete",
                )


@pytest.mark.parametrize(("model", "identity", "check"), list(_scoped_params()))
def test_scoped_admin_hides_bravo(actor_for, model, identity, check):
    SCOPED_CHECKS[check](actor_for(identity), model)


@pytest.mark.parametrize(("model", "url", "identity"), list(_object_view_params()))
def test_bravo_object_views_look_missing(actor_for, model, url, identity):
    check_object_view(actor_for(identity), model, url)


@pytest.mark.parametrize(("source", "field_name", "identity"), list(_autocomplete_params()))
def test_autocomplete_offers_no_bravo_row(actor_for, source, field_name, identity):
    check_autocomplete(actor_for(identity), source, field_name)


@pytest.fixture
def bravo_accounts(two_orgs):
    """Rows for the stock admins, so their object pages are tried on real rows of Bravo's."""
    from allauth.account.models import EmailAddress
    from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
    from django.contrib.auth.models import Group

    _, bravo = two_orgs
    EmailAddress.objects.create(user=bravo.owner, email=bravo.owner.email, verified=True)
    account = SocialAccount.objects.create(user=bravo.owner, provider="google", uid="bravo-sub")
    app = SocialApp.objects.create(provider="google", name="bravo app", client_id="bravo-id")
    SocialToken.objects.create(app=app, account=account, token="bravo-token")
    Group.objects.create(name="bravo-group")


@pytest.mark.usefixtures("bravo_accounts")
@pytest.mark.parametrize(
    ("model", "identity"),
    [
        pytest.param(model, identity, id=f"{model._meta.label_lower}-{identity}-forbidden")
        for model in UNSCOPED_MODELS
        for identity in TENANT_ROLES
    ],
)
def test_unscoped_admin_refuses_tenant_roles(actor_for, model, identity):
    check_unscoped_admin_refuses(actor_for(identity), model)


@pytest.mark.parametrize(
    "model",
    [pytest.param(m, id=f"{m._meta.label_lower}-member-no_admin") for m in registered_models()],
)
def test_member_cannot_reach_any_admin_url(client, two_orgs, model):
    alpha, bravo = two_orgs
    client.force_login(alpha.users[Role.MEMBER])
    for url in admin_urls(model):
        address = reverse_admin_url(url, sample(Organization, bravo).pk)
        response = client.get(address)
        assert response.status_code == 302, (address, response)
        assert response["Location"].startswith(reverse("admin:login")), response["Location"]


def test_member_cannot_reach_the_admin_index(client, two_orgs):
    alpha, _ = two_orgs
    client.force_login(alpha.users[Role.MEMBER])

    response = client.get(reverse("admin:index"), follow=True)

    assert [url for url, _ in response.redirect_chain][-1] == reverse("home")
    assert response.status_code == 200
    assert "You are a <strong>member</strong>" in response.content.decode()
    switched = client.post(
        reverse("admin:switch_organization"), {"organization": alpha.organization.pk}
    )
    assert switched.status_code == 302
    assert switched["Location"].startswith(reverse("admin:login"))


# --- the member's pages: another organisation's profile guide looks missing --------------

MEMBER = "member"  # the member's pages are open to every role, the plain member's first


def member_actor(client, identity, two_orgs, operator) -> Actor:
    if identity != MEMBER:
        return sign_in(client, identity, two_orgs, operator)
    alpha, bravo = two_orgs
    client.force_login(alpha.users[Role.MEMBER])
    return Actor(client, identity, alpha, bravo)


def open_both_profiles_to_members(actor: Actor) -> None:
    """Bravo's profile open to members too, so only the organisation can keep it out."""
    profiles = [sample(LiveConstraintProfile, world) for world in (actor.alpha, actor.bravo)]
    LiveConstraintProfile.objects.filter(pk__in=[p.pk for p in profiles]).update(
        members_may_use=True
    )


def check_member_guide(actor: Actor) -> None:
    """Bravo's profile guide at /profiles/<slug>/guide/ is the 404 of a slug that does not
    exist; Alpha's own opens (for anyone but the operator, who is no member)."""
    bravo_slug = sample(LiveConstraintProfile, actor.bravo).slug
    got = fetch(actor, "get", reverse("member_profile_guide", args=[bravo_slug]))
    expected = fetch(actor, "get", reverse("member_profile_guide", args=["matrix-missing"]))
    assert (got.status_code, got.content) == (expected.status_code, expected.content), (
        f"the guide of Bravo's {bravo_slug} as {actor.identity}: {got.status_code}, but a "
        f"missing profile gives {expected.status_code}"
    )
    assert got.status_code == 404, f"the guide of Bravo's profile as {actor.identity}: {got}"
    assert_names_no_bravo(actor, got, "the guide of Bravo's profile")
    alpha_slug = sample(LiveConstraintProfile, actor.alpha).slug
    own = fetch(actor, "get", reverse("member_profile_guide", args=[alpha_slug]))
    assert own.status_code == (404 if actor.is_operator else 200), own
    home = fetch(actor, "get", reverse("home"))
    assert home.status_code == (302 if actor.is_operator else 200), home  # no member: away
    assert_names_no_bravo(actor, home, "the member's home")


@pytest.mark.parametrize("identity", [MEMBER, *IDENTITIES])
def test_member_guide_of_a_bravo_profile_looks_missing(client, two_orgs, operator, identity):
    actor = member_actor(client, identity, two_orgs, operator)
    open_both_profiles_to_members(actor)

    check_member_guide(actor)


def test_matrix_catches_an_unscoped_member_guide(client, two_orgs, operator, monkeypatch):
    actor = member_actor(client, MEMBER, two_orgs, operator)
    open_both_profiles_to_members(actor)
    check_member_guide(actor)  # passes while the lookup names the organisation

    # The one lookup both pages read (the guide directly, the home through its locks).
    unscoped = lambda *, caller: LiveConstraintProfile.objects.filter(  # noqa: E731
        is_active=True, members_may_use=True
    )
    monkeypatch.setattr(issuance_selectors, "profiles_for_caller", unscoped)
    monkeypatch.setattr(tenant_views, "profiles_for_caller", unscoped)

    with pytest.raises(AssertionError, match="Bravo"):
        check_member_guide(actor)
    monkeypatch.setattr(tenant_views, "profiles_for_caller", profiles_for_caller)  # guide scoped

    with pytest.raises(AssertionError, match="the member's home"):
        check_member_guide(actor)


def test_matrix_covers_every_registered_admin():
    """Nothing registered escapes both halves of the matrix."""
    assert set(SCOPED_MODELS) | set(UNSCOPED_MODELS) == set(admin.site._registry)
    assert {Organization, Membership} <= set(SCOPED_MODELS)
    assert User in UNSCOPED_MODELS


# --- the matrix has teeth ------------------------------------------------------------------


def _unscope(monkeypatch, model, attribute):
    monkeypatch.setattr(type(model_admin(model)), attribute, getattr(admin.ModelAdmin, attribute))


def _change(model) -> AdminUrl:
    return next(url for url in object_urls(model) if url.label == "change")


def _teeth_cases():
    cases = [
        (Domain, "owner", "changelist", lambda a: check_changelist(a, Domain)),
        (Domain, "auditor", "change_view", lambda a: check_object_view(a, Domain, _change(Domain))),
        (Invitation, "owner", "actions", lambda a: check_actions(a, Invitation)),
        (Membership, "owner", "delete_post", lambda a: check_delete_post(a, Membership)),
        (Membership, "admin", "filter", lambda a: check_filter_querystring(a, Membership)),
        (
            Organization,
            "auditor",
            "autocomplete",
            lambda a: check_autocomplete(a, Membership, "organization"),
        ),
    ]
    return [
        pytest.param(model, identity, check, id=f"{model._meta.label_lower}-{identity}-{name}")
        for model, identity, name, check in cases
    ]


@pytest.mark.parametrize(("model", "identity", "check"), _teeth_cases())
def test_matrix_catches_an_unscoped_get_queryset(actor_for, monkeypatch, model, identity, check):
    actor = actor_for(identity)
    check(actor)  # passes while the admin is scoped

    _unscope(monkeypatch, model, "get_queryset")

    with pytest.raises(AssertionError) as caught:
        check(actor)
    assert "bravo" in str(caught.value).lower()
    assert "fixture gives" not in str(caught.value)


@pytest.mark.parametrize("identity", [OPERATOR, "owner"])
def test_matrix_catches_an_unscoped_foreign_key_field(actor_for, monkeypatch, identity):
    """The operator in Alpha may add memberships; an owner could if the admin allowed it."""
    if identity == "owner":
        monkeypatch.setattr(
            type(model_admin(Membership)), "has_add_permission", lambda self, request: True
        )
    actor = actor_for(identity)
    check_add_post(actor, Membership)  # passes: the user choices are Alpha's members only

    _unscope(monkeypatch, Membership, "formfield_for_foreignkey")

    with pytest.raises(AssertionError, match=r"pointing at Bravo|names Bravo"):
        check_add_post(actor, Membership)


def test_matrix_catches_an_unscoped_list_filter(actor_for, monkeypatch):
    membership_admin = type(model_admin(Membership))
    monkeypatch.setattr(membership_admin, "list_filter", ("role", "user"))
    actor = actor_for("owner")
    check_list_filters(actor, Membership)  # passes: the user filter lists Alpha's users only

    _unscope(monkeypatch, Membership, "get_list_filter")

    with pytest.raises(AssertionError, match="bravo"):
        check_list_filters(actor, Membership)


def test_matrix_catches_choices_from_a_model_without_an_organization_path(actor_for, monkeypatch):
    """A related model with no path to its organisation fails the form, naming the model,
    where scoping that returned it unfiltered could leak rows the matrix cannot recognise."""
    actor = actor_for(OPERATOR)
    check_add_post(actor, Membership)  # passes: users are scoped through their memberships

    monkeypatch.delattr(User, "organization_path")  # as if the declaration were forgotten

    with pytest.raises(AssertionError, match=r"tenants\.User has no known path"):
        check_add_post(actor, Membership)
