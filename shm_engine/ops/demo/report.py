"""The demo's summary: what the published scores did to each kind of node.

`Stats` samples `ScoreReader` snapshots while the demo runs (each epoch
counted once) and compares the desirability ranking with what a least-CPU
policy would have picked from the same heartbeats: where the GC-heavy nodes
rank, how many failing or huge-job nodes sit in the top tenth, and how
global pressure moved around the traffic spike.  ``summary`` renders the
table the demo prints at the end.
"""

from __future__ import annotations

import numpy as np

from shm_engine.core.states import UNREGISTERED, NodeState
from shm_engine.ops.demo.fleet import KINDS, Fleet

__all__ = ["Stats"]


class Stats:
    """What the scores did to each simulated node, sampled from snapshots."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        n = fleet.n
        self.index = {name: i for i, name in enumerate(fleet.names)}
        self.seen = np.zeros((n, len(NodeState)), bool)
        self.samples = 0
        self.pos_sum = np.zeros(n)  # rank by desirability (unranked: last)
        self.cpu_pos_sum = np.zeros(n)  # rank a least-CPU policy would give
        self.score_sum = np.zeros(n)
        self.node_samples = np.zeros(n)
        self.topk = max(1, n // 10)
        self.top_bad = np.zeros(2)  # failing + bigjobs in top-k: desirability
        self.top_bad_cpu = np.zeros(2)  # the same under least-CPU
        self.pressure_before: list[float] = []
        self.pressure_spike: list[tuple[float, float]] = []
        self.pressure_after: list[float] = []
        self.last_epoch = -1

    def add(self, snap, t: float, cpu: np.ndarray) -> None:
        """One snapshot at fleet time ``t``; ``cpu`` per node as last sent
        (NaN for a silent node)."""
        if snap is None or snap.epoch == self.last_epoch:
            return
        self.last_epoch = snap.epoch
        f, n = self.fleet, self.fleet.n
        slot = np.full(n, -1)
        for s, name in enumerate(snap.nodes):
            i = self.index.get(name) if name is not None else None
            if i is not None:
                slot[i] = s
        have = slot >= 0
        if not have.any():
            return
        self.samples += 1
        st = np.where(have, snap.state[np.maximum(slot, 0)], UNREGISTERED).astype(int)
        for s in NodeState:
            self.seen[:, int(s)] |= st == int(s)
        rank_of = {int(s): r for r, s in enumerate(snap.ranked.tolist(), 1)}
        pos = np.array([rank_of.get(int(s), n) if s >= 0 else n for s in slot], float)
        live = ~np.isnan(cpu)
        order = np.argsort(np.where(live, cpu, np.inf), kind="stable")
        cpu_pos = np.empty(n)
        cpu_pos[order] = np.arange(1, n + 1)
        cpu_pos[~live] = n
        self.pos_sum[have] += pos[have]
        self.cpu_pos_sum[have] += cpu_pos[have]
        self.score_sum[have] += snap.score[slot[have]]
        self.node_samples[have] += 1
        bad = [f.of_kind("failing"), f.of_kind("bigjobs")]
        for j, mask in enumerate(bad):
            self.top_bad[j] += int((mask & have & (pos <= self.topk)).sum())
            self.top_bad_cpu[j] += int((mask & have & (cpu_pos <= self.topk)).sum())
        x = (t % f.period) / f.period
        if f.in_spike(t):
            self.pressure_spike.append((snap.pressure, t))
        elif x < 0.40:
            self.pressure_before.append(snap.pressure)
        else:
            self.pressure_after.append(snap.pressure)

    def summary(
        self,
        *,
        name: str,
        ran_s: float,
        tick_ms: int,
        dead_after_s: float,
        sent: int,
        dropped: int,
        accepted: int | None,
        rejected: int | None,
    ) -> str:
        f = self.fleet
        ns = np.maximum(self.node_samples, 1)
        mean_pos = self.pos_sum / ns
        mean_cpu_pos = self.cpu_pos_sum / ns
        mean_score = self.score_sum / ns
        out = [
            f"shm-engine demo: {f.n} nodes for {ran_s:.1f} s on engine {name!r} "
            f"(tick {tick_ms} ms), {self.samples} snapshots",
            "",
        ]
        hdr = (
            f"{'kind':<9} {'nodes':>5} {'quarantined':>11} {'dead':>5} {'overloaded':>10} "
            f"{'mean score':>10} {'mean rank':>9}  what it is"
        )
        out += [hdr, "-" * len(hdr)]
        for i, kind in enumerate(KINDS):
            m = (f.kind == i) & (self.node_samples > 0)
            cnt = int((f.kind == i).sum())
            if cnt == 0:
                continue
            q = int(self.seen[m, NodeState.QUARANTINED].sum())
            d = int(self.seen[m, NodeState.DEAD].sum())
            o = int(self.seen[m, NodeState.OVERLOADED].sum())
            sc = mean_score[m].mean() if m.any() else 0.0
            rk = mean_pos[m].mean() if m.any() else float("nan")
            out.append(
                f"{kind.key:<9} {cnt:>5} {q:>11} {d:>5} {o:>10} {sc:>10.3f} "
                f"{rk:>9.1f}  {kind.about}"
            )
        out.append(
            f"(nodes of the kind seen in that state at least once; rank 1 is best, "
            f"unranked counts as {f.n})"
        )
        if f.silence_s < dead_after_s:
            out.append(
                f"(the dying nodes were silent {f.silence_s:.1f} s < dead_after_s "
                f"{dead_after_s:g} s: run longer, e.g. --duration 30, to see them die)"
            )
        out.append("")
        sampled = self.node_samples > 0
        if sampled.any():
            best = [i for i in np.argsort(mean_pos, kind="stable") if sampled[i]][:5]
            out.append(
                "best ranked on average: "
                + ", ".join(f"{f.names[i]} ({mean_pos[i]:.1f})" for i in best)
            )
        g = f.of_kind("gcheavy") & sampled
        if g.any():
            a, b = mean_pos[g].mean(), mean_cpu_pos[g].mean()
            verdict = "higher" if a < b else "not higher"
            out.append(
                f"GC-heavy nodes: mean rank {a:.1f} by desirability vs {b:.1f} under a "
                f"least-CPU policy (of {f.n}): desirability ranks them {verdict}"
            )
        if self.samples:
            tb, tc = self.top_bad / self.samples, self.top_bad_cpu / self.samples
            out.append(
                f"top {self.topk}, on average: least-CPU holds {tc[0]:.1f} failing and "
                f"{tc[1]:.1f} huge-job nodes; desirability holds {tb[0]:.1f} and "
                f"{tb[1]:.1f}"
            )

        def mean(xs):
            return f"{sum(xs) / len(xs):.3f}" if xs else "-"

        if self.pressure_spike:
            peak, at = max(self.pressure_spike)
            out.append(
                f"pressure: {mean(self.pressure_before)} before the spike, peak "
                f"{peak:.3f} during it (t={at:.1f} s), {mean(self.pressure_after)} after"
            )
        else:
            out.append(f"pressure: {mean(self.pressure_before)} (the run ended before the spike)")
        acc = "?" if accepted is None else f"{accepted:,}"
        rej = "?" if rejected is None else f"{rejected:,}"
        out.append(
            f"heartbeats: {sent:,} sent, {acc} accepted by the engine, {rej} rejected, "
            f"{dropped:,} dropped by the client"
        )
        return "\n".join(out)
