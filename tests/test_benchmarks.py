"""The benchmark suite (benchmarks/suite.py) measures what it says: its profiles
are the settings they claim, on the real rendered template, and its parsing and
summary are right. No test here asserts anything about speed."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers import ROOT, procfile, project_env, run

sys.path.insert(0, str(ROOT / "benchmarks"))

import suite  # noqa: E402


@pytest.fixture(scope="module")
def bench_project(rendered, venv, tmp_path_factory):
    """The defaults, rendered, with the suite's bench app copied in."""
    project = tmp_path_factory.mktemp("bench") / "project"
    shutil.copytree(rendered({}), project)
    shutil.copytree(suite.BENCH_APP, project / "bench")
    return project


@pytest.fixture(scope="module")
def effective(bench_project, venv):
    """profile -> the effective Celery settings and transport under its settings module."""
    configs = {}
    for profile in suite.PROFILES:
        env = project_env(
            venv,
            DJANGO_SETTINGS_MODULE=suite.PROFILES[profile]["module"],
            DATABASE_URL=f"sqlite:///{bench_project}/db.sqlite3",
            CELERY_BROKER_URL="redis://127.0.0.1:6379/0",  # never connected to
        )
        out = run(["python", "manage.py", "bench", "config"], bench_project, env).stdout
        configs[profile] = json.loads(out.strip().splitlines()[-1])
    return configs


@pytest.mark.parametrize("profile", ["reference", "ceiling"])
def test_reference_and_ceiling_are_what_they_claim(effective, profile):
    config = effective[profile]
    assert config["settings_module"] == f"bench.profiles.{profile}"
    assert {key: config["celery"][key] for key in suite.CLAIMS[profile]} == suite.CLAIMS[profile]
    assert config["transport"] == suite.KOMBU_REDIS


def test_reference_is_cookiecutter_djangos_published_settings(effective):
    celery = effective["reference"]["celery"]
    assert celery["task_acks_late"] is False
    assert celery["worker_prefetch_multiplier"] == 4
    assert celery["result_backend"] == "redis://…"
    assert (celery["task_time_limit"], celery["task_soft_time_limit"]) == (300, 60)
    assert celery["worker_send_task_events"] and celery["task_send_sent_event"]


def test_generated_profile_is_the_rendered_settings(bench_project, effective):
    """Only the bench app is added: every Celery setting is the template's own."""
    config = effective["generated"]
    settings = (bench_project / "config" / "settings.py").read_text()
    assert config["transport"] == "ops.transport:Transport"
    assert config["celery"]["task_acks_late"] is ("CELERY_TASK_ACKS_LATE = True" in settings)
    assert config["celery"]["worker_max_memory_per_child"] != suite.CLAIMS["reference"]["worker_max_memory_per_child"]


def test_worker_command_is_the_procfiles_at_concurrency_2(bench_project):
    def without_concurrency(command):
        words = command.split()
        index = words.index("-c")
        return words[:index] + words[index + 2 :], words[index + 1]

    line = procfile(bench_project)["worker-default"]
    generated = suite.worker_command(bench_project, None)
    assert without_concurrency(generated) == (without_concurrency(line)[0], "2")
    assert suite.worker_command(bench_project, 128).endswith(" --prefetch-multiplier 128")


def test_worker_command_replaces_a_prefetch_option(tmp_path):
    (tmp_path / "Procfile").write_text(
        "worker-default: celery -A config worker -Q default --concurrency=8 "
        "--prefetch-multiplier ${CELERY_WORKER_PREFETCH_MULTIPLIER:-16} -n default@%h\n"
    )
    assert suite.worker_command(tmp_path, 4) == (
        "celery -A config worker -Q default -c 2 -n default@%h --prefetch-multiplier 4"
    )
    assert "--prefetch-multiplier ${CELERY_WORKER_PREFETCH_MULTIPLIER:-16}" in suite.worker_command(tmp_path, None)


def test_node_name_expands_like_celery(monkeypatch):
    monkeypatch.setattr(suite.socket, "gethostname", lambda: "box.example.org")
    assert suite.node_name("celery -A config worker -n default@%h -c 2") == "default@box.example.org"
    assert suite.node_name("celery worker --hostname=w1@%n") == "w1@box"
    assert suite.node_name("celery worker") == "celery@box.example.org"


HEY_OUTPUT = """
Summary:
  Total:\t1.2345 secs
  Requests/sec:\t810.0000

Latency distribution:
  10%% in 0.0020 secs
  50%% in 0.0040 secs
  99%% in 0.0150 secs

Status code distribution:
  [202]\t990 responses
  [503]\t10 responses
"""


def test_hey_output_is_parsed():
    assert suite.parse_hey(HEY_OUTPUT) == {
        "statuses": {"202": "990", "503": "10"},
        "rps": 810.0,
        "p50": 0.004,
        "p99": 0.015,
    }


def test_summary_takes_medians_and_ratios_and_checks_targets():
    runs = [
        {"profile": profile, "figures": {"w1_drain": value, "w5_p99": latency}}
        for profile, values, latency in [
            ("generated", (130, 100, 160), 20),
            ("reference", (100, 90, 110), 10),
            ("ceiling", (200, 100, 300), 5),
            ("metrics", (120, 125, 110), 20),
        ]
        for value in values
    ]
    medians, ratios = suite.summarize(runs)
    assert medians["generated"]["w1_drain"] == 130
    assert ratios["w1_drain"] == {
        "generated/reference": 1.3,
        "generated/ceiling": 0.65,
        "metrics/generated": 120 / 130,
    }
    met = {(t["metric"], t["ratio_of"]): t["met"] for t in suite.target_results(ratios)}
    assert met[("w1_drain", "generated/reference")] is True
    assert met[("w1_drain", "generated/ceiling")] is False
    assert met[("w1_drain", "metrics/generated")] is False  # 0.92 < 0.95
    assert met[("w5_p99", "generated/reference")] is False  # 2x the reference's latency
    assert met[("w1_enqueue", "generated/reference")] is None  # not measured
    table = suite.table(medians, ratios, suite.target_results(ratios))
    assert "| 1 drain, no-op | tasks/s | 130 | 100 | 200 | 120 | 1.30 | 0.65 | 0.92 |" in table


def test_scraper_reads_succeeded_tasks_by_name():
    """The metrics profile checks what the worker's /metrics says it ran, summed over queues."""
    exposition = (
        "# TYPE celery_task_succeeded_total counter\n"
        'celery_task_succeeded_total{name="bench.tasks.noop",queue="default"} 3.0\n'
        'celery_task_succeeded_total{queue="other",name="bench.tasks.noop"} 2.0\n'
        'celery_task_succeeded_total{name="celery.accumulate",queue="default"} 301.0\n'
        'celery_task_started_total{name="bench.tasks.noop",queue="default"} 9.0\n'
    )
    scraper = suite.Scraper("http://unused")
    scraper.scrape = lambda: exposition
    scraper.start()
    assert scraper.stop() == suite.Counter({"bench.tasks.noop": 5, "celery.accumulate": 301})


def test_py_spy_frames_are_ranked(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("main;loop;read 6\nmain;loop;ack 3\nmain;idle 1\n")
    frames = suite.top_frames(raw, limit=2)
    assert frames["samples"] == 10
    assert frames["own_percent"] == [("read", 60.0), ("ack", 30.0)]
    assert frames["inclusive_percent"] == [("loop", 90.0), ("read", 60.0)]  # not main, in every sample


def test_memory_is_read_from_smaps_rollup():
    pss = suite.pss_kib(suite.os.getpid())
    rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])
    assert 0 < pss <= rss * 2
    assert suite.os.getpid() in suite.descendants(suite.os.getppid())
