"""The auditor's search: case-folded prefix indexes for end user and key prefix, a pattern
index for request id (docs/adr/0018-grant-search-indexes.md).

The grants table is the largest there is, and a plain CREATE INDEX blocks its INSERTs (token
issuance) until the build ends: on PostgreSQL the indexes are built and the old ones dropped
CONCURRENTLY, outside a transaction. Other databases (SQLite) take the ordinary operations.
The new indexes come first, so the search stays indexed while the old ones go.
"""

import django.db.models.functions.text
from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models

import apps.audit.models


class _ConcurrentlyOnPostgres:
    """The concurrent operation on PostgreSQL; its plain parent elsewhere."""

    plain: type

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        operation = super() if schema_editor.connection.vendor == "postgresql" else self._plain()
        operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        operation = super() if schema_editor.connection.vendor == "postgresql" else self._plain()
        operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def _plain(self):
        return super(self.plain, self)


class AddIndexOnline(_ConcurrentlyOnPostgres, AddIndexConcurrently):
    plain = AddIndexConcurrently


class RemoveIndexOnline(_ConcurrentlyOnPostgres, RemoveIndexConcurrently):
    plain = RemoveIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("audit", "0005_grant_fk_indexes"),
    ]

    operations = [
        AddIndexOnline(
            model_name="tokengrant",
            index=models.Index(
                models.F("organization"),
                apps.audit.models.PatternOps(
                    django.db.models.functions.text.Upper("end_user"), name="text_pattern_ops"
                ),
                name="grant_end_user_search_idx",
            ),
        ),
        AddIndexOnline(
            model_name="tokengrant",
            index=models.Index(
                models.F("organization"),
                apps.audit.models.PatternOps(
                    django.db.models.functions.text.Upper("client_key_prefix"),
                    name="text_pattern_ops",
                ),
                name="grant_key_prefix_search_idx",
            ),
        ),
        AddIndexOnline(
            model_name="tokengrant",
            index=models.Index(
                fields=["organization", "request_id"],
                name="grant_request_id_search_idx",
                opclasses=["int8_ops", "varchar_pattern_ops"],
            ),
        ),
        RemoveIndexOnline(model_name="tokengrant", name="audit_token_organiz_2fde1b_idx"),
        RemoveIndexOnline(model_name="tokengrant", name="audit_token_organiz_a07a0c_idx"),
    ]
