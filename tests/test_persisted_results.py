"""Results persisted by an earlier release still load after a module was renamed, so a re-run
reuses them instead of doing the step again."""

from __future__ import annotations

import base64

from prefect.serializers import PickleSerializer

# `decide`'s result as the release before the rename persisted it: a `Verdict` of the module
# `riposte.tasks.policy` (now `PolicyDecision` of `riposte.tasks.decide`), pickled by Prefect.
OLD_DECISION = (
    "Z0FXVkFnRUFBQUFBQUFDTUZISnBjRzl6ZEdVdWRHRnphM011Y0c5c2FXTjVsSXdIVm1WeVpHbGpkSlNUbENtQmxIMlVL"
    "SXdJWDE5awphV04wWDErVWZaUW9qQTF3YjJ4cFkzbGZiM0pwWjJsdWxJd0JiNVNNRFhCdmJHbGplVjl6YUdFeU5UYVVq"
    "QUZ6bEl3UGNHOXNhV041ClgyWmhiR3hpWVdOcmxJbU1EVzFoZEdOb1pXUmZjblZzWlhPVUtZd0hZV04wYVc5dWM1UXBq"
    "QWh2ZFhSamIyMWxjNVFwakFkMGFXTnIKWlhSemxIMlVkWXdTWDE5d2VXUmhiblJwWTE5bGVIUnlZVjlmbEU2TUYxOWZj"
    "SGxrWVc1MGFXTmZabWxsYkdSelgzTmxkRjlmbEkrVQpLR2dMYUExb0IyZ09hQXhvQ1pDTUZGOWZjSGxrWVc1MGFXTmZj"
    "SEpwZG1GMFpWOWZsRTUxWWk0PQo="
)


def test_a_decision_persisted_under_the_old_module_name_loads() -> None:
    from riposte.tasks.decide import PolicyDecision

    loaded = PickleSerializer().loads(base64.b64decode(OLD_DECISION))

    assert isinstance(loaded, PolicyDecision)
    assert (loaded.policy_origin, loaded.policy_sha256, loaded.actions) == ("o", "s", ())
