"""Riposte's own settings: where the local stack listens and which blocks the flows use.

Every value can be overridden by an environment variable named ``RIPOSTE_<FIELD>``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The deployments that answer alerts are named where runs are planned; re-exported here.
from riposte.alerts.run_plan import BATCH_DEPLOYMENT as BATCH_DEPLOYMENT
from riposte.alerts.run_plan import RESPOND_DEPLOYMENT as RESPOND_DEPLOYMENT

POLL_DEPLOYMENT = "poll_alerts/poll"
DIGEST_DEPLOYMENT = "post_digests/digest"
RECONCILE_DEPLOYMENT = "reconcile_alerts/reconcile"
CONTAIN_DEPLOYMENT = "contain_alert/contain"
APPROVAL_SWEEP_DEPLOYMENT = "expire_approvals/approval-sweep"
PLAYBOOK_FLOW = "run_playbook"
"""Every registered playbook has a deployment of this flow named after it, to run it by hand."""
RESPONSE_TAG = "response"
"""The tag of every response run (`respond`, `respond-batch`): the UI's runs list filtered on it
shows responses only (`RESPONSES_VIEW`)."""
HOUSEKEEPING_TAG = "housekeeping"
"""The tag of the scheduled runs that only keep things going (poll, reconcile, digest, sweep)."""
RESPONSES_VIEW = f"/runs?tag={RESPONSE_TAG}"
"""The Prefect UI's runs page showing responses only, from the UI's address."""


class Settings(BaseSettings):
    # Frozen: `get_settings` hands every caller the same object.
    model_config = SettingsConfigDict(env_prefix="RIPOSTE_", extra="ignore", frozen=True)

    home: Path = Field(Path(".riposte"), description="Folder for the local stack's state")
    host: str = Field("127.0.0.1", description="Address the local stack listens on")
    prefect_port: int = 4200
    intake_port: int = 4210
    sandbox_port: int = 4220

    intake_tokens: str = Field(
        "", description="Comma-separated bearer tokens the intake accepts (several for rotation)"
    )
    intake_hmac_keys: str = Field(
        "", description="Comma-separated HMAC-SHA256 keys for X-Riposte-Signature (rotation)"
    )
    intake_key_file: Path | None = Field(
        None,
        description='File (0600) holding {"tokens": [...], "hmac_keys": [...]} as JSON, on the '
        "intake machines; re-read when it changes, so a rotation needs no restart. Unlike a "
        "Secret block, nothing of it is readable through the Prefect API",
    )
    intake_secret_block: str | None = Field(
        None,
        description='Name of a Prefect Secret block holding {"tokens": [...], "hmac_keys": '
        "[...]}; read at start and every minute, so a rotation needs no restart",
    )
    intake_journal: Path | None = Field(
        None,
        description="Folder of the intake's journal, where accepted alerts are written (fsynced) "
        "before the 202 and kept until their runs exist in Prefect; one folder per intake, on "
        "its own disk. None: `<home>/intake-journal`",
    )
    intake_journal_max_mb: int = Field(
        256,
        ge=1,
        description="Alerts waiting in the journal for Prefect, at most this many MiB; beyond it "
        "the intake answers 503 with Retry-After",
    )
    intake_run_wait_seconds: float = Field(
        0.2,
        ge=0,
        description="While Prefect keeps up, how long an answer waits for the alerts' runs to "
        "exist, to name them (`flow_run_id`); past it, or while alerts wait, it says `queued`",
    )
    respond_deployment: str = RESPOND_DEPLOYMENT

    approval_keys: str = Field(
        "",
        description="Comma-separated keys (32+ bytes) that sign approval links; the first signs, "
        "all verify. Empty: the file `approval_key_file`",
    )
    approval_key_file: Path | None = Field(
        None,
        description="File holding the approval link keys (comma-separated), on the intake and "
        "every worker. Never a Prefect block or a work pool variable: the Prefect API shows those",
    )
    public_url: str | None = Field(
        None,
        description="Address approvers reach the intake at, for approval links; "
        "None: the intake's local address",
    )
    approval_sweep_seconds: int = Field(
        600,
        ge=5,
        description="How often the approval sweep runs besides its run at each approval's "
        "deadline (booked when the links are sent): a safety net for a booking that was lost",
    )

    poll_interval_seconds: int = Field(
        60, ge=1, description="How often the poll reads the alerts updated since its watermark"
    )
    reconcile_interval_seconds: int = Field(
        600, ge=10, description="How often reconcile looks for alerts no response answered"
    )
    reconcile_retries: int = Field(
        3,
        ge=0,
        description="How many times reconcile answers again an alert whose responses ended "
        "Failed or Crashed (one more each time it runs); then it reports the alert as given up",
    )
    poll_sources: str = Field(
        "graph",
        description="Comma-separated sources the poll reads: graph, defender_endpoint, "
        "cloud_apps, defender_cloud",
    )
    staging: bool = Field(
        False,
        description="Set by `riposte replay --stage` in its own processes only: containment "
        "approvals are answered as the staging run was told",
    )
    poll_paused: bool = Field(
        False, description="Serve the poll deployment with its schedule paused"
    )
    responder_poll_seconds: float = Field(
        0.25, gt=0, description="How often the responder looks for scheduled runs"
    )
    runner_limit: int = Field(8, ge=1, description="Flow runs one served process runs at once")

    playbooks: str = Field(
        "",
        description="Comma-separated importable modules, or paths to .py files or folders, whose "
        "playbooks are registered beside the built-ins (and those of the `riposte.playbooks` "
        "entry point group)",
    )
    policy_file: Path | None = Field(
        None, description="Policy file the flows read at every run; None: the shipped default"
    )
    templates_dir: Path | None = Field(
        None, description="Folder of custom message templates that policies may name"
    )
    servicenow_block: str = Field(
        "servicenow-credentials/riposte-servicenow",
        description="Block that files tickets of policies saying `ticket: {system: servicenow}`",
    )
    jira_block: str = Field(
        "jira-credentials/riposte-jira",
        description="Block that files tickets of policies saying `ticket: {system: jira}`",
    )
    digest_interval_seconds: int = Field(
        300, ge=10, description="How often the digest flow looks for periods that closed"
    )
    digest_paused: bool = Field(
        False, description="Serve the digest deployment with its schedule paused"
    )

    # Beyond one machine: what every worker must share (see the README's Production section).
    result_storage_block: str | None = Field(
        None,
        description="Prefect filesystem block (`local-file-system/<name>`, "
        "`remote-file-system/<name>`...) where the flows persist results and step records; "
        "None: Prefect's default, PREFECT_RESULTS_LOCAL_STORAGE_PATH (one machine only)",
    )
    lock_manager: str = Field(
        "file",
        description="`file`: file locks under RIPOSTE_HOME/locks (one machine); "
        "`redis://[user:password@]host:port/db` (or rediss://): prefect-redis's "
        "RedisLockManager, shared by several machines (pip install prefect-redis)",
    )
    lock_hold_seconds: float = Field(
        900.0,
        ge=10,
        description="A lock whose holder died lapses after this long; longer than any step",
    )
    sync_interval_seconds: int = Field(
        120,
        ge=10,
        description="How often sync_tickets brings alerts and their tickets to one state",
    )
    sync_lock_hold_seconds: float = Field(
        120.0,
        ge=5,
        description="A ticket's sync lock lapses after this long when its holder was killed "
        "(the next run applies the ticket then)",
    )
    lost_run_seconds: int = Field(
        90,
        ge=30,
        description="A run of the work pool silent this long (no heartbeat, or Pending without "
        "starting) is marked Crashed and run again; at least 3 x the runs' "
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY (prefect.yaml sets 30)",
    )

    # Request budgets of the Prefect rate limits (riposte.limits), read when setup creates them:
    # "30/min", "1/s", "100/min,1500/h" (a bare number is per minute); None: the vendor's limit.
    rate_graph: str | None = Field(None, description="Graph security budget (150/min)")
    rate_mde: str | None = Field(None, description="Defender for Endpoint (100/min,1500/h)")
    rate_mdebatch: str | None = Field(
        None, description="Defender for Endpoint batch update budget (10/min,500/h)"
    )
    rate_mdca: str | None = Field(None, description="Defender for Cloud Apps budget (30/min)")
    rate_arm: str | None = Field(None, description="Defender for Cloud, ARM budget (1200/h)")
    rate_servicenow: str | None = Field(None, description="ServiceNow budget (300/min)")
    rate_jira: str | None = Field(None, description="Jira budget (300/min)")
    rate_slack: str | None = Field(None, description="Slack webhook budget (1/s)")
    rate_teams: str | None = Field(None, description="Teams Workflows webhook budget (60/min)")

    @property
    def poll_source_list(self) -> list[str]:
        return [s.strip() for s in self.poll_sources.split(",") if s.strip()]

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def responses_url(self) -> str:
        """The local Prefect UI's runs page filtered to responses."""
        return f"{self.prefect_ui_url}{RESPONSES_VIEW}"

    @property
    def journal_folder(self) -> Path:
        return self.intake_journal or self.home / "intake-journal"

    @property
    def intake_url(self) -> str:
        return f"http://{self.host}:{self.intake_port}"

    @property
    def approval_base_url(self) -> str:
        return (self.public_url or self.intake_url).rstrip("/")

    @property
    def sandbox_url(self) -> str:
        return f"http://{self.host}:{self.sandbox_port}"


_cached: tuple[tuple[tuple[str, str], ...], Settings] | None = None
_cached_lock = threading.Lock()


def get_settings() -> Settings:
    """The settings from the environment as it is now. Building them costs about 10 ms, and hot
    paths (a policy action's ticket block, a replay of 10,000 alerts) ask thousands of times:
    the last ones are reused while no ``RIPOSTE_*`` variable changed."""
    global _cached
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("RIPOSTE_")))
    held = _cached
    if held is not None and held[0] == key:
        return held[1]
    settings = Settings()
    with _cached_lock:
        _cached = (key, settings)
    return settings
