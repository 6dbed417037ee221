"""The Grafana dashboard of gpuyard's metrics (deploy/grafana-dashboard.json, which a
test keeps equal to `dashboard()`): import it in Grafana and pick the Prometheus data
source that scrapes the job of `gpuyard manifests` (or `gpuyard up`'s metrics address).

Leader-elected components run two replicas; only the leader sets the gauges, so
panels take max() over replicas."""

from __future__ import annotations

import json
from typing import Any

# (title, unit, [(PromQL, legend)]), in rows of three panels
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Pending gangs by reason",
        "short",
        [("max by (reason) (gpuyard_scheduler_pending_gangs)", "{{reason}}")],
    ),
    (
        "Unschedulable pods by reason",
        "short",
        [("max by (reason) (gpuyard_scheduler_unschedulable_pods)", "{{reason}}")],
    ),
    (
        "Queue wait p95 by size (GPUs)",
        "s",
        [
            (
                "histogram_quantile(0.95, sum by (le, size) "
                "(rate(gpuyard_scheduler_queue_wait_seconds_bucket[15m])))",
                "{{size}} GPUs",
            )
        ],
    ),
    (
        "Queue wait p95 by team",
        "s",
        [
            (
                "histogram_quantile(0.95, sum by (le, team) "
                "(rate(gpuyard_scheduler_queue_wait_seconds_bucket[15m])))",
                "{{team}}",
            )
        ],
    ),
    (
        "Bindings per second",
        "ops",
        [
            ("sum(rate(gpuyard_scheduler_bindings_total[5m]))", "bound"),
            ("sum(rate(gpuyard_scheduler_binding_errors_total[5m]))", "refused"),
        ],
    ),
    (
        "Preemptions per hour by cause",
        "short",
        [("sum by (cause) (increase(gpuyard_scheduler_preemptions_total[1h]))", "{{cause}}")],
    ),
    (
        "Team GPUs assigned, in use and idle",
        "short",
        [("max by (team, state) (gpuyard_team_gpus)", "{{team}} {{state}}")],
    ),
    (
        "Team nodes: shortfall, lent, borrowed",
        "short",
        [
            (
                'max by (team, state) (gpuyard_team_nodes{state=~"shortfall|lent_out|borrowed_in"})',
                "{{team}} {{state}}",
            )
        ],
    ),
    (
        "Unhealthy nodes and the brake",
        "short",
        [
            ("max(gpuyard_health_unhealthy_nodes)", "unhealthy"),
            ("max(gpuyard_health_brake_held_nodes)", "held back by the brake"),
            ("max(gpuyard_health_brake_tripped)", "brake tripped"),
            ("sum(increase(gpuyard_health_brake_trips_total[1h]))", "brake trips per hour"),
        ],
    ),
    (
        "Nodes failing a health condition",
        "short",
        [
            (
                'max by (condition) (gpuyard_health_node_conditions{status!="True"})',
                "{{condition}}",
            )
        ],
    ),
    (
        "Health verdicts per hour",
        "short",
        [
            (
                "sum by (condition, status, reason) (increase(gpuyard_health_verdicts_total[1h]))",
                "{{condition}}={{status}} {{reason}}",
            )
        ],
    ),
    (
        "GPU tests per hour by result",
        "short",
        [
            (
                "sum by (kind, result) (increase(gpuyard_health_gpu_tests_total[1h]))",
                "{{kind}} {{result}}",
            )
        ],
    ),
    (
        "GPU test duration p95",
        "s",
        [
            (
                "histogram_quantile(0.95, sum by (le, kind) "
                "(rate(gpuyard_health_gpu_test_duration_seconds_bucket[1h])))",
                "{{kind}}",
            )
        ],
    ),
    (
        "TrainingJobs by phase",
        "short",
        [("max by (phase) (gpuyard_trainingjobs)", "{{phase}}")],
    ),
    (
        "Job restarts per hour by cause",
        "short",
        [
            ("sum by (cause) (increase(gpuyard_trainingjob_restarts_total[1h]))", "{{cause}}"),
            ("sum(increase(gpuyard_trainingjob_preemptions_total[1h]))", "preempted"),
        ],
    ),
    (
        "Job time to run p95",
        "s",
        [
            (
                "histogram_quantile(0.95, sum by (le) "
                "(rate(gpuyard_trainingjob_time_to_run_seconds_bucket[1h])))",
                "p95",
            )
        ],
    ),
    (
        "Balloons by pool",
        "short",
        [
            ("max by (pool) (gpuyard_balloons_running)", "{{pool}} running"),
            ("max by (pool) (gpuyard_balloons_nodes_held)", "{{pool}} nodes held"),
        ],
    ),
    (
        "API requests per minute by component",
        "short",
        [("sum by (component) (rate(gpuyard_api_requests_total[5m])) * 60", "{{component}}")],
    ),
    (
        "Scheduler pass time p99",
        "s",
        [
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(gpuyard_scheduler_decision_seconds_bucket[5m])))",
                "p99",
            )
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 8, "x": 8 * (i % 3), "y": 8 * (i // 3)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "title": "gpuyard",
        "uid": "gpuyard-overview",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def exprs() -> list[str]:
    return [e for _, _, targets in PANELS for e, _ in targets]
