"""The internet egress limit annotation: values read, bad values refused by the team webhook."""

import pytest

from gpuyard.network import bandwidth
from gpuyard.teams.admission import TeamInfo, mutate_pod


@pytest.mark.parametrize(
    "value,bits",
    [
        ("2Gbit", 2_000_000_000),
        ("500Mbit", 500_000_000),
        ("1.5G", 1_500_000_000),
        ("100kbit", 100_000),
    ],
)
def test_values(value, bits):
    assert bandwidth.parse(value) == bits


@pytest.mark.parametrize(
    "value,words",
    [
        ("fast", "not a bandwidth"),
        ("2GB", "not a bandwidth"),
        ("2Gbps", "bit (2Gbit), not bps"),
        ("10bit", "between 100kbit and 400Gbit"),
        ("1Tbit", "between 100kbit and 400Gbit"),
        ("-1Gbit", "not a bandwidth"),
    ],
)
def test_bad_values_are_refused_by_the_team_webhook(value, words):
    pod = {"metadata": {"name": "p", "annotations": {bandwidth.ANNOTATION: value}}, "spec": {}}
    d = mutate_pod(pod, TeamInfo("a"), "team-a")
    assert not d.allowed
    assert bandwidth.ANNOTATION in d.message and words in d.message
    assert not mutate_pod(pod, None, "default").allowed


def test_a_good_value_or_none_is_admitted_as_before():
    plain = {"metadata": {"name": "p"}, "spec": {}}
    limited = {
        "metadata": {"name": "p", "annotations": {bandwidth.ANNOTATION: "2Gbit"}},
        "spec": {},
    }
    a, b = mutate_pod(plain, TeamInfo("a"), "team-a"), mutate_pod(limited, TeamInfo("a"), "team-a")
    assert a.allowed and b.allowed and a.patch == b.patch
