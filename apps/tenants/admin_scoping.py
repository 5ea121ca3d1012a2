"""One mixin scopes every tenant model admin to the active organisation (docs/architecture.md,
"Tenancy").

Django's admin trusts that whoever reaches it may see every row: querysets, related-field
choices, list filters and autocomplete all use unscoped managers. Each of those doors is
closed here once, so a model admin only declares its roles and the services it writes with.
"""

from django.contrib import admin, messages
from django.contrib.admin.exceptions import DisallowedModelAdminLookup, DisallowedModelAdminToField
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path, unquote
from django.contrib.admin.views.main import ERROR_FLAG, SEARCH_VAR, ChangeList, ChangeListSearchForm
from django.contrib.admin.widgets import url_params_from_lookup_dict
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import DateField, Model
from django.forms import CharField
from django.forms.models import BaseInlineFormSet
from django.template.response import TemplateResponse

from apps.audit.selectors import policy_change_list
from apps.tenants.models import Organization, Role
from apps.tenants.scoping import scope_to_organization


class TenantBoundFormMixin:
    """Binds a new row to the active organisation before validation, not after.

    The organisation is not a form field, so Django would skip every unique constraint that
    names it; validating them here turns a duplicate into a form error instead of a 500.
    """

    tenant_organization: Organization | None = None
    tenant_field = "organization"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tenant_organization is not None and self.instance._state.adding:
            setattr(self.instance, self.tenant_field, self.tenant_organization)

    def validate_unique(self):
        exclude = set(self._get_validation_exclusions())
        if self.tenant_organization is not None:
            exclude.discard(self.tenant_field)
        try:
            self.instance.validate_unique(exclude=exclude)
            self.instance.validate_constraints(exclude=exclude)
        except ValidationError as error:
            self._update_errors(error)


class ScopedChoicesMixin:
    """Foreign-key and many-to-many choices from the active organisation only.

    Django builds them from the related model's unscoped manager, which would list (and
    accept) every organisation's rows.
    """

    def _scoped(self, db_field, request, kwargs):
        organization = request.tenant.organization
        if organization is not None:
            base = kwargs.get("queryset", db_field.related_model._default_manager.all())
            kwargs["queryset"] = scope_to_organization(base, organization)
        return kwargs

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        kwargs = self._scoped(db_field, request, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        kwargs = self._scoped(db_field, request, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class InvalidChangelistParameters(IncorrectLookupParameters):
    """A changelist parameter refused, with the sentence the user reads about it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


INVALID_FILTERS = "These filters are not valid."


# Longer than anything a search field holds; SQLite refuses LIKE patterns over 50,000 bytes.
SEARCH_MAX_LENGTH = 500


class CheckedSearchForm(ChangeListSearchForm):
    """Django's search box (which already refuses NUL), refusing an over-long term too:
    the changelist says so in a message and searches nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields[SEARCH_VAR] = CharField(
            required=False, strip=False, max_length=SEARCH_MAX_LENGTH
        )


class CheckedChangeList(ChangeList):
    """A changelist whose query string cannot make it fail with a 500.

    Django trusts its lookup parameters as far as ``QuerySet.filter()``: a NUL byte reaches
    the database (psycopg refuses it as it executes), and the date drill-down's year turns
    into an ``OverflowError`` or a ``ValueError`` outside the ``try`` meant to catch bad
    input. Both become the admin's "invalid filter" answer here instead.
    """

    search_form_class = CheckedSearchForm

    def get_filters(self, request):
        for key, values in self.get_filters_params().items():
            if "\x00" in key or any("\x00" in value for value in values):
                raise InvalidChangelistParameters(f"{INVALID_FILTERS} They hold a NUL character.")
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError, ValidationError) as error:
            raise InvalidChangelistParameters(INVALID_FILTERS) from error


# What the stock field filters read from the query string, by the field they filter on.
DATE_FILTER_LOOKUPS = ("gte", "lt", "isnull")
PLAIN_FILTER_LOOKUPS = ("exact", "isnull")


class CheckedChangelistMixin:
    """A model admin whose changelist takes only the parameters its own page writes.

    For any ``ModelAdmin``; ``TenantScopedAdmin`` has it, so every tenant admin does.
    """

    def offered_lookups(self, request) -> set[str]:
        """Every parameter the page's own filters and date drill-down read.

        Django would accept any lookup on a local field (``?detail__regex=…``,
        ``?request_body__contains=…``): ad-hoc scans, regexes that backtrack for minutes,
        and lookups some databases do not support at all.
        """
        offered = set()
        if self.date_hierarchy:
            offered |= {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}
        for spec in self.get_list_filter(request):
            if isinstance(spec, type) and issubclass(spec, admin.SimpleListFilter):
                offered.add(spec.parameter_name)
            elif isinstance(spec, type):
                offered.update(spec(request, {}, self.model, self).expected_parameters())
            else:
                offered |= self._field_filter_lookups(request, spec)
        return offered

    def _field_filter_lookups(self, request, spec) -> set[str]:
        path, filter_class = spec if isinstance(spec, tuple | list) else (spec, None)
        field = get_fields_from_path(self.model, path)[-1]
        if filter_class is admin.EmptyFieldListFilter:
            return {f"{path}__isempty"}
        if filter_class not in (
            None,
            admin.RelatedFieldListFilter,
            admin.RelatedOnlyFieldListFilter,
        ):
            spec = filter_class(field, request, {}, self.model, self, field_path=path)
            return set(spec.expected_parameters())
        if field.is_relation:
            return {path, f"{path}__{field.target_field.name}__exact", f"{path}__isnull"}
        if isinstance(field, DateField):
            return {f"{path}__{lookup}" for lookup in DATE_FILTER_LOOKUPS}
        # ``?outcome=issued`` is the short form of the filter's own ``outcome__exact``.
        return {path, *(f"{path}__{lookup}" for lookup in PLAIN_FILTER_LOOKUPS)}

    def lookup_allowed(self, lookup, value, request=None):
        if request is not None and lookup in self.offered_lookups(request):
            return True
        # Django's raw-id popups pass a foreign key's ``limit_choices_to`` as lookups.
        for fk_lookup in self.model._meta.related_fkey_lookups:
            fk_lookup = fk_lookup() if callable(fk_lookup) else fk_lookup
            if (lookup, value) in url_params_from_lookup_dict(fk_lookup).items():
                return True
        return False

    def get_changelist(self, request, **kwargs):
        return CheckedChangeList

    def get_changelist_instance(self, request):
        """A refused parameter is the admin's "invalid filter" answer, said in words: the
        changelist redirects to ``?e=1`` with the message, an export answers 400 with it."""
        try:
            return super().get_changelist_instance(request)
        except DisallowedModelAdminLookup as error:
            name = str(error).removeprefix("Filtering by ").removesuffix(" not allowed")
            problem = InvalidChangelistParameters(
                f"“{name[:80]}” is not a filter this page offers."
            )
            cause = error
        except DisallowedModelAdminToField as error:
            problem, cause = InvalidChangelistParameters(INVALID_FILTERS), error
        except InvalidChangelistParameters as error:
            problem, cause = error, error.__cause__
        except IncorrectLookupParameters as error:
            problem, cause = InvalidChangelistParameters(INVALID_FILTERS), error
        match = request.resolver_match
        on_changelist = match is not None and match.url_name == (
            f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        )
        if on_changelist and ERROR_FLAG not in request.GET:
            messages.error(request, problem.message)
        raise problem from cause


class TenantScopedAdmin(ScopedChoicesMixin, CheckedChangelistMixin, admin.ModelAdmin):
    """Base for every admin of an organisation-owned model.

    Subclasses set ``view_role`` / ``change_role`` and implement ``service_save`` and
    ``service_delete`` so that writes go through the app's services.
    """

    tenant_field = "organization"
    view_role = Role.AUDITOR
    change_role = Role.ADMIN
    operator_only_fields: tuple[str, ...] = ()

    # --- permissions: from the member's role in the active organisation ----------------

    def _can(self, request, role: Role) -> bool:
        tenant = request.tenant
        return tenant.has_role(role) and (tenant.organization is not None or tenant.is_operator)

    def _can_write(self, request, role: Role) -> bool:
        """Writes happen inside one organisation: the operator's all-orgs view is read-only."""
        return request.tenant.has_role(role) and request.tenant.organization is not None

    def has_module_permission(self, request) -> bool:
        return self._can(request, self.view_role)

    def has_view_permission(self, request, obj=None) -> bool:
        return self._can(request, self.view_role)

    def has_add_permission(self, request) -> bool:
        return self._can_write(request, self.change_role)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._can_write(request, self.change_role)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._can_write(request, self.change_role)

    def history_view(self, request, object_id, extra_context=None):
        """The object's PolicyChange trail, which is the real record, not Django's LogEntry."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": f"Change history: {obj}",
            "subtitle": None,
            "object": obj,
            "opts": self.opts,
            "changes": policy_change_list(
                organization=getattr(obj, self.tenant_field),
                object_type=self.opts.label_lower,
                object_id=obj.pk,
            ),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/policy_change_history.html", context)

    # --- reads ------------------------------------------------------------------------

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        tenant = request.tenant
        if tenant.organization is not None:
            return queryset.filter(**{self.tenant_field: tenant.organization})
        if tenant.is_operator:
            return queryset
        return queryset.none()

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if request.tenant.organization is None and self.tenant_field not in columns:
            columns.append(self.tenant_field)  # the operator's cross-org view names the org
        return columns

    def get_list_filter(self, request):
        """Related filters list only values the scoped rows use (the stock one lists all)."""
        filters = []
        organization = request.tenant.organization
        for spec in super().get_list_filter(request):
            if isinstance(spec, str):
                if spec == self.tenant_field and organization is not None:
                    continue
                field = get_fields_from_path(self.model, spec)[-1]
                if field.is_relation:
                    spec = (spec, admin.RelatedOnlyFieldListFilter)
            filters.append(spec)
        if organization is None and self.tenant_field not in filters:
            filters.append((self.tenant_field, admin.RelatedOnlyFieldListFilter))
        return filters

    # --- forms ------------------------------------------------------------------------

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if request.tenant.organization is not None:
            exclude.append(self.tenant_field)
        return exclude

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if request.tenant.organization is not None and self.tenant_field in fields:
            fields.remove(self.tenant_field)
        return fields

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and request.tenant.organization is None:
            readonly.append(self.tenant_field)  # rows never move between organisations
        if not request.tenant.is_operator:
            readonly.extend(self.operator_only_fields)
        return readonly

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(
            form.__name__,
            (TenantBoundFormMixin, form),
            {
                "tenant_organization": request.tenant.organization,
                "tenant_field": self.tenant_field,
            },
        )

    # --- writes: through the services -------------------------------------------------

    def organization_for(self, request, obj) -> Organization:
        return request.tenant.organization or getattr(obj, self.tenant_field)

    def save_model(self, request, obj, form, change):
        saved = self.service_save(request, obj, form, change)
        if saved is not obj:  # the admin goes on to log and redirect with ``obj``
            obj.pk = saved.pk
            obj.refresh_from_db()

    def delete_model(self, request, obj):
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.service_delete(request, obj)

    def service_save(self, request, obj, form, change) -> Model:
        raise NotImplementedError(f"{type(self).__name__} must write through a service")

    def service_delete(self, request, obj) -> None:
        raise NotImplementedError(f"{type(self).__name__} must delete through a service")


class ReadOnlyTenantAdmin(TenantScopedAdmin):
    """Rows written by services and tasks only: nobody, the operator included, adds, edits
    or deletes one here (an admin may still offer actions that call a service)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TenantInlineFormSet(BaseInlineFormSet):
    """Give each inline row the parent's organisation before it validates."""

    def _construct_form(self, i, **kwargs):
        form = super()._construct_form(i, **kwargs)
        if form.instance.organization_id is None:
            form.instance.organization_id = self.instance.organization_id
        return form


class TenantScopedInline(ScopedChoicesMixin, admin.TabularInline):
    """Related choices come from the active organisation; rights follow the member's role.

    The parent admin's ``save_formset`` writes the rows through services.
    """

    formset = TenantInlineFormSet
    view_role = Role.AUDITOR
    change_role = Role.ADMIN
    extra = 0

    def has_view_permission(self, request, obj=None) -> bool:
        return request.tenant.has_role(self.view_role)

    def has_add_permission(self, request, obj=None) -> bool:
        return request.tenant.has_role(self.change_role) and request.tenant.organization is not None

    def has_change_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request, obj)

    def get_exclude(self, request, obj=None):
        return [*(super().get_exclude(request, obj) or []), "organization"]
