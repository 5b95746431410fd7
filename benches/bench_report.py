"""Printing the benchmark's figures and drawing `latest.png`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

OTHER_LABELS = {"parl": "PARL", "ray": "Ray"}
OURS, FLOOR, OTHER = "tab:blue", "tab:orange", "tab:purple"  # plot colours


def print_header(meta: dict) -> None:
    quick = "  [--quick: smoke-test counts, figures not meaningful]" if meta["quick"] else ""
    print(
        f"parl_rs {meta['parl_rs']} benchmark, {meta['date']} on {meta['host']}: "
        f"{meta['cpus']} CPUs, load {meta['loadavg_at_start'][0]:.2f}, Python {meta['python']}, "
        f"numpy {meta['numpy']}, pyzmq {meta['pyzmq']} (libzmq {meta['libzmq']}){quick}"
    )
    print(f"cluster: {meta['cluster']}")
    print(flush=True)


def _others(results: dict) -> list[tuple[str, dict]]:
    """(label, figures) of PARL and Ray runs that produced figures."""
    found = []
    for name, figures in results.get("others", {}).items():
        if "skipped" not in figures and "error" not in figures:
            label = f"{OTHER_LABELS.get(name, name)} {figures.get('version', '')}".strip()
            found.append((label, figures))
    return found


def _num(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_results(results: dict) -> None:
    ours, floors, meta = results["parl_rs"], results["floors"], results["meta"]
    others = _others(results)
    counts = meta["counts"]

    print(f"\nSmall call round trip: add(i, 1) on one actor, {counts['small_calls']:,} calls")
    print(f"  {'':34}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'calls/s':>10}")
    rows = [("parl_rs", ours["small_call"]), ("pyzmq REQ/REP + pickle", floors["pyzmq_small_call"])]
    rows += [(label, figures["small_call"]) for label, figures in others if "small_call" in figures]
    for label, fig in rows:
        lat = fig["latency_us"]
        print(
            f"  {label:34}{_num(lat['p50']):>10}{_num(lat['p99']):>10}{_num(lat['mean']):>10}"
            f"{_num(fig['calls_per_s'], 0):>10}"
        )

    native = ours.get("native_client")
    if native:
        print("\nThe Rust client (parl-client) on an actor of its own, interleaved with Python's:")
        for name in ("python", "rust"):
            lat = native[name]["latency_us"]
            print(f"  {name + ' client':34}{_num(lat['p50']):>10}{_num(lat['p99']):>10}")
        print(f"  Rust p50 / Python p50: {native['rust_p50_vs_python']:.2f}")

    n, rounds = counts["pipelined_calls"], counts["pipelined_rounds"]
    print(
        f"\nPipelined small calls: one wait=False actor, {n:,} calls issued then collected, "
        f"beside {n:,} synchronous ones (median of {rounds} rounds)"
    )
    rows = [("parl_rs", ours["pipelined"])]
    rows += [(label, figures["pipelined"]) for label, figures in others if "pipelined" in figures]
    for label, fig in rows:
        print(
            f"  {label:34}{_num(fig['calls_per_s'], 0):>10} calls/s, sync "
            f"{_num(fig['sync_calls_per_s'], 0)} calls/s: x{fig['speedup']:.2f}"
            f"   (issuing took {fig['issue_s'] * 1e3:,.0f} ms)"
        )

    print("\nnumpy array echo (there and back)")
    print(f"  {'':34}{'p50 ms':>10}{'max ms':>10}{'MiB/s':>10}{'reps':>6}")
    for size in (16, 256):
        rows = [
            (f"{size} MiB parl_rs", ours[f"echo_{size}mib"]),
            (f"{size} MiB pyzmq zero-copy", floors[f"pyzmq_zerocopy_echo_{size}mib"]),
            (f"{size} MiB memcpy (one copy)", floors[f"memcpy_{size}mib"]),
        ]
        rows += [
            (f"{size} MiB {label}", figures[f"echo_{size}mib"])
            for label, figures in others
            if f"echo_{size}mib" in figures
        ]
        for label, fig in rows:
            ms = fig["ms"]
            print(
                f"  {label:34}{_num(ms['p50']):>10}{_num(ms['max']):>10}"
                f"{_num(fig['mib_per_s'], 0):>10}{ms['n']:>6}"
            )

    encrypted = ours.get("encrypted")
    if encrypted:
        print("\nOn a cluster started with --encrypt (every frame ChaCha20-Poly1305), same floors")
        lat, ms = encrypted["small_call"]["latency_us"], encrypted["echo_16mib"]["ms"]
        print(
            f"  small call p50 {_num(lat['p50'])} µs (pyzmq "
            f"{_num(encrypted['pyzmq_small_call']['latency_us']['p50'])} µs): "
            f"x{encrypted['small_call_p50_vs_pyzmq']:.2f}"
        )
        print(
            f"  16 MiB echo p50 {_num(ms['p50'])} ms (pyzmq zero-copy "
            f"{_num(encrypted['pyzmq_zerocopy_echo_16mib']['ms']['p50'])} ms): "
            f"x{encrypted['echo_16mib_vs_pyzmq_zerocopy']:.2f}"
        )

    c = ours["creation"]
    print(f"\nActor creation on a warm pool: construct + first call, {c['n']} actors one at a time")
    print(f"  {'':34}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    rows = [
        ("parl_rs first result", c["first_result_ms"]),
        ("parl_rs constructor alone", c["construct_ms"]),
    ]
    rows += [
        (f"{label} first result", figures["creation"]["first_result_ms"])
        for label, figures in others
        if "creation" in figures
    ]
    for label, ms in rows:
        print(f"  {label:34}{_num(ms['p50']):>10}{_num(ms['p99']):>10}{_num(ms['max']):>10}")
    refill = c["pool_refill_ms"]
    print(
        f"  (untimed: a released slot had a warm job again after {_num(refill.get('p50'))} ms p50)"
    )

    f = ours["fanout"]
    print(
        f"\nFan-out: {f['actors']} actors (one per CPU slot), each call {f['work']} "
        f"(really {f['local_sleep_1ms_median_ms']:.3f} ms here), {f['calls']:,} calls via futures"
    )
    print(
        f"  parl_rs {f['calls_per_s']:,.0f} calls/s; ideal {f['ideal_calls_per_s']:,.0f} "
        f"calls/s; efficiency {f['efficiency']:.0%}"
    )

    g = ours["gil"]
    print(
        f"\nGIL check: a pure-Python counter thread while another thread waits {g['call_s']:g} s"
        f" (median of {g['rounds']} windows each)"
    )
    print(f"  idle (time.sleep):           {g['counter_per_s_idle']:>14,.0f} increments/s")
    print(
        f"  during a blocking call:      {g['counter_per_s_during_call']:>14,.0f} increments/s"
        f"   ratio {g['ratio_call']:.2f}"
    )
    print(
        f"  during future.result():      {g['counter_per_s_during_future_wait']:>14,.0f} "
        f"increments/s   ratio {g['ratio_future']:.2f}"
    )
    print("  (a ratio near 1: waiting on a remote call never holds the GIL)")

    m = ours["memory"]
    print("\nMemory (VmRSS)")
    print(f"  warm job, no actor yet:      {_mib(m['warm_job_rss_kib'])}")
    print(f"  an idle actor's job:         {_mib(m['idle_actor_job_rss_kib'])}  (after its calls)")
    print(
        f"  master: {_mib(m['master_rss_kib_idle'])} idle, "
        f"{_mib(c['master_rss_kib_before'])} before and {_mib(c['master_rss_kib_after'])} after "
        f"{c['n']} creations, {_mib(m['master_rss_kib_end'])} at the end"
    )
    print(f"  worker: {_mib(m['worker_rss_kib_idle'])} idle, {_mib(m['worker_rss_kib_end'])} end")
    print(f"  master per 1,000 actors: {m['master_rss_per_1000_actors_note']}")

    for name, figures in results.get("others", {}).items():
        note = figures.get("skipped") or figures.get("error")
        if note:
            print(f"\n{OTHER_LABELS.get(name, name)}: {note}")

    load = meta.get("loadavg_at_end") or [float("nan")]
    print(
        f"\nGoals (ratios measured in this run; load average {meta['loadavg_at_start'][0]:.2f} "
        f"at the start, {load[0]:.2f} at the end, on {meta['cpus']} CPUs)"
    )
    for goal in results["goals"].values():
        unit = " ms" if goal["unit"] == "ms" else ""
        verdict = "PASS" if goal["pass"] else "MISS"
        print(f"  {goal['what']:52}{goal['value']:>8.2f}{unit:3}  goal {goal['goal']:8}  {verdict}")


def _mib(kib: Optional[float]) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def plot(results: dict, samples: dict[str, Any], path: Path) -> None:
    """Small-call latency distributions (parl_rs vs pyzmq), the creation histogram, call
    throughput and array bandwidth bars, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ours, floors, meta = results["parl_rs"], results["floors"], results["meta"]
    others = _others(results)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    title = f"parl_rs {meta['parl_rs']} benchmark, {meta['date']}, {meta['cpus']} CPUs"
    fig.suptitle(title + ("  (--quick)" if meta["quick"] else ""))

    ax = axes[0][0]
    series = [
        ("parl_rs", samples.get("small_parl_rs"), ours["small_call"]["latency_us"]["p50"]),
        ("pyzmq", samples.get("small_pyzmq"), floors["pyzmq_small_call"]["latency_us"]["p50"]),
    ]
    series = [(label, np.asarray(s) * 1e6, p50) for label, s, p50 in series if s]
    if series:
        low = min(s.min() for _, s, _ in series)
        high = max(s.max() for _, s, _ in series)
        bins = np.geomspace(max(low, 1.0), max(high, low * 1.01, 2.0), 80)
        for (label, s, p50), color in zip(series, (OURS, FLOOR)):
            ax.hist(s, bins=bins, histtype="step", color=color, label=f"{label} (p50 {p50:.0f} µs)")
            ax.axvline(p50, color=color, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.legend()
    ax.set_title("small call round trip add(i, 1)")
    ax.set_xlabel("µs per call (log)")
    ax.set_ylabel("calls")

    ax = axes[0][1]
    created = samples.get("creation")
    if created:
        ms = np.asarray(created) * 1e3
        ax.hist(ms, bins=40, color=OURS)
        p50 = ours["creation"]["first_result_ms"]["p50"]
        ax.axvline(p50, color="black", linestyle="--", linewidth=1, label=f"p50 {p50:.1f} ms")
        ax.axvline(20, color="red", linestyle=":", linewidth=1, label="goal 20 ms")
        ax.legend()
    ax.set_title("actor creation: construct + first call (warm pool)")
    ax.set_xlabel("ms")
    ax.set_ylabel("actors")

    ax = axes[1][0]
    bars = [
        ("parl_rs\nsync", ours["small_call"]["calls_per_s"], OURS),
        ("parl_rs\npipelined", ours["pipelined"]["calls_per_s"], OURS),
        (
            f"parl_rs fan-out\n{ours['fanout']['actors']} x 1 ms",
            ours["fanout"]["calls_per_s"],
            OURS,
        ),
        ("pyzmq\nREQ/REP", floors["pyzmq_small_call"]["calls_per_s"], FLOOR),
    ]
    for label, figures in others:
        if "small_call" in figures:
            bars.append((f"{label}\nsync", figures["small_call"]["calls_per_s"], OTHER))
        if "pipelined" in figures:
            bars.append((f"{label}\npipelined", figures["pipelined"]["calls_per_s"], OTHER))
    _bars(ax, bars, "{:,.0f}")
    ax.set_title("calls per second")

    ax = axes[1][1]
    bars = []
    for size in (16, 256):
        bars += [
            (f"parl_rs\n{size} MiB", ours[f"echo_{size}mib"]["mib_per_s"], OURS),
            (
                f"pyzmq 0-copy\n{size} MiB",
                floors[f"pyzmq_zerocopy_echo_{size}mib"]["mib_per_s"],
                FLOOR,
            ),
            (f"memcpy\n{size} MiB", floors[f"memcpy_{size}mib"]["mib_per_s"], FLOOR),
        ]
        bars += [
            (f"{label}\n{size} MiB", figures[f"echo_{size}mib"]["mib_per_s"], OTHER)
            for label, figures in others
            if f"echo_{size}mib" in figures
        ]
    _bars(ax, bars, "{:,.0f}")
    ax.set_yscale("log")
    ax.set_title("array echo, MiB/s (array size / median round trip; log)")

    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    tmp.replace(path)


def _bars(ax: Any, bars: list[tuple[str, float, str]], fmt: str) -> None:
    labels = [label for label, _, _ in bars]
    values = [value for _, value, _ in bars]
    rects = ax.bar(range(len(bars)), values, color=[color for _, _, color in bars])
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels(labels, fontsize=8)
    for rect, value in zip(rects, values):
        ax.annotate(
            fmt.format(value),
            (rect.get_x() + rect.get_width() / 2, rect.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
