"""Backups left in the live prefix by tenants deleted before deleted incarnations' backups were set
aside (``retired/``): a one-time, idempotent move into the folder of the incarnation that took them,
where they can be attributed safely.

Whose a backup is follows from when it was taken and the name's history in git: each incarnation
lives from the commit that created its file (``tenancy.automation.incarnation``); a backup taken
while an incarnation was the newest one created is that incarnation's, including the automatic backup
its destroy took after its file was deleted. Safely, because:

- the manifest's time is the backup job's clock and a commit's time the service's (in whole
  seconds): a backup within ``margin`` (one hour) of any creation of the name is left where it is
  and reported, never guessed;
- a backup taken before any file of the name existed in this history is left and reported (another
  repository's tenant, or a history rewritten);
- the current incarnation's backups stay (they are its own);
- nothing else moves: each move is the worker's (``tenancy.dataops.retired.retire_backups``:
  record first, manifest last, live copy deleted after), so running it again moves nothing more and a
  cut-off run finishes on the next.

What no history can tell: a tenant re-created while its predecessor's destroy had failed had its
update run on the old stack (fixed: ``previous_incarnation_not_destroyed``), so its Qdrant held the
old tenant's data; backups taken by that Qdrant are attributed to the new incarnation and stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tenancy.automation.contract import StackRef
from tenancy.automation.data_operations import DataUnavailable, TenantData, retired_area
from tenancy.automation.incarnation import incarnation_marker, run_git
from tenancy.dataops.backup import BackupError, BackupRecord, Progress, list_backups
from tenancy.dataops.object_store import ObjectStoreError
from tenancy.dataops.retired import (
    RetiredIncarnation,
    retire_backups,
    retired_bucket,
    retired_incarnations,
)
from tenancy.spec.errors import SpecError
from tenancy.spec.plans import BACKUP_DEFAULT_MAX_AGE_DAYS
from tenancy.spec.tenant import parse_tenant, resolve
from tenancy.spec.yaml_loading import load_yaml

MARGIN = timedelta(hours=1)
MIGRATION = "legacy-layout-migration"  # the record's ``operation``: no operation moved them


@dataclass(frozen=True)
class IncarnationLife:
    commit: str  # the commit that created the file
    created: datetime
    deleted: datetime | None  # None: the file is there now (the current incarnation)
    max_age_days: int  # the retention its last version of the file had

    def marker(self, environment: str) -> str:
        return incarnation_marker(environment, self.commit)


@dataclass(frozen=True)
class LegacyPlan:
    moves: dict[str, list[BackupRecord]] = field(default_factory=dict)  # creating commit -> backups
    current: list[BackupRecord] = field(default_factory=list)  # the current incarnation's own: stay
    unattributed: list[tuple[BackupRecord, str]] = field(default_factory=list)  # stay, with why
    # Backups a later incarnation's destroy set aside in its own folder though an earlier one took them
    # (folder -> creating commit they belong to -> backups): moved between the two folders.
    regrouped: dict[str, dict[str, list[BackupRecord]]] = field(default_factory=dict)


def plan_legacy_backups(
    records: Sequence[BackupRecord], lives: Sequence[IncarnationLife], *, margin: timedelta = MARGIN
) -> LegacyPlan:
    """Which incarnation each live backup belongs to (see the module docstring)."""
    ordered = sorted(lives, key=lambda life: life.created)
    plan = LegacyPlan()
    for record in sorted(records, key=lambda r: r.created):
        near = [life for life in ordered if abs(record.created - life.created) < margin]
        owner = next((life for life in reversed(ordered) if life.created <= record.created), None)
        if near:
            plan.unattributed.append(
                (
                    record,
                    f"taken within {_hours(margin)} of the creation of incarnation {near[0].commit[:12]} "
                    f"({near[0].created.isoformat()}): the backup job's clock and git's cannot tell "
                    "whose Qdrant it holds",
                )
            )
        elif owner is None:
            plan.unattributed.append((record, "taken before any file of the name in this history"))
        elif owner.deleted is None:
            plan.current.append(record)
        else:
            plan.moves.setdefault(owner.commit, []).append(record)
    return plan


def migrate_legacy_backups(
    data: TenantData,
    stack: StackRef,
    lives: Sequence[IncarnationLife],
    *,
    dry_run: bool = False,
    margin: timedelta = MARGIN,
    progress: Progress | None = None,
) -> LegacyPlan:
    """Move the live backups of ``stack`` that belong to a deleted incarnation into its folder of
    ``retired/``; the plan (what moved, what stays and why). ``DataUnavailable`` when the store fails
    (what moved stays moved; run it again)."""
    say = progress or (lambda _message: None)
    live = data.bucket(stack)
    by_commit = {life.commit: life for life in lives}
    try:
        plan = plan_legacy_backups(list_backups(live), lives, margin=margin)
        area = retired_area(data, stack)
        # A destroy after the layout existed moved every live backup into its own incarnation's folder,
        # an earlier (deleted before the layout) incarnation's too: those are attributed as well.
        for folder in (owner.folder for owner in retired_incarnations(area)):
            if folder not in by_commit:
                continue  # an ``op-…`` folder, or one this history does not know: left alone
            held = plan_legacy_backups(list_backups(retired_bucket(area, folder)), lives, margin=margin)
            others = {commit: records for commit, records in held.moves.items() if commit != folder}
            if others:
                plan.regrouped[folder] = others
        if dry_run:
            return plan

        def move(source: Any, commit: str, records: list[BackupRecord]) -> None:
            life, now = by_commit[commit], datetime.now(UTC)
            owner = RetiredIncarnation(
                folder=commit,
                incarnation=life.marker(stack.environment),
                retired=life.deleted or now,  # when the incarnation ended, as a destroy records it
                max_age_days=life.max_age_days,
                operation=MIGRATION,
                moved=now,  # keeps a sweep off the folder while this copies (the partial-upload grace)
            )
            retire_backups(source, area, owner, progress=say, only={r.id for r in records})

        for commit, records in plan.moves.items():
            move(live, commit, records)
        for folder, moves in plan.regrouped.items():
            for commit, records in moves.items():
                move(retired_bucket(area, folder), commit, records)
    except (BackupError, ObjectStoreError) as error:
        raise DataUnavailable(f"the backups of {stack.name} could not be moved: {error}") from None
    return plan


def incarnation_lives(tenants_dir: Path, environment: str, name: str) -> list[IncarnationLife]:
    """Every incarnation of ``<environment>/<name>.yaml`` in the git history of the checkout holding
    ``tenants_dir``, oldest first; [] without git or history."""
    path = f"{environment}/{name}.yaml"
    log = run_git(tenants_dir, "log", "--no-renames", "--diff-filter=AD", "--name-status", "--relative",
               "--format=%x00%H %ct", "HEAD", "--", path)  # fmt: skip
    if log is None:
        return []
    events: list[tuple[str, datetime, str]] = []  # (commit, time, "A" | "D"), newest first
    commit, when = "", datetime.min.replace(tzinfo=UTC)
    for line in log.splitlines():
        if line.startswith("\0"):
            commit, _, seconds = line[1:].strip().partition(" ")
            when = datetime.fromtimestamp(int(seconds), UTC)
        elif "\t" in line and commit:
            status = line.split("\t", 1)[0]
            if status in ("A", "D"):
                events.append((commit, when, status))
    lives: list[IncarnationLife] = []
    deleted: tuple[str, datetime] | None = None
    for commit, when, status in events:  # newest first: a deletion precedes its creation
        if status == "D":
            deleted = (commit, when)
            continue
        max_age = _max_age_days(tenants_dir, f"{deleted[0]}^" if deleted else "HEAD", path, environment)
        lives.append(IncarnationLife(commit, when, deleted[1] if deleted else None, max_age))
        deleted = None
    return sorted(lives, key=lambda life: life.created)


def _max_age_days(tenants_dir: Path, revision: str, path: str, environment: str) -> int:
    text = run_git(tenants_dir, "show", f"{revision}:./{path}")
    if text is not None:
        try:
            qdrant = resolve(parse_tenant(load_yaml(text), file=path), environment).qdrant
        except (SpecError, ValueError, yaml.YAMLError):
            qdrant = None
        if qdrant is not None:
            return qdrant.backup_max_age_days
    return BACKUP_DEFAULT_MAX_AGE_DAYS


def _hours(margin: timedelta) -> str:
    hours = margin.total_seconds() / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")
