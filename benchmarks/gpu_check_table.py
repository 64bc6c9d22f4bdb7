"""The one-screen table at the end of ``benchmarks/gpu_check.sh``, read from its ``summary.txt``
(one ``phase=NAME key=value …`` line per benchmark summary, one ``phase=NAME status=…`` line per
phase). Each line is explained in docs/gpu_check.md.

    python benchmarks/gpu_check_table.py OUT/summary.txt [full|dry]

Exits 1 when a phase failed, timed out or was skipped, or a GPU test failed (0 otherwise), so the
CI test of the dry run fails with it.
"""

from __future__ import annotations

import sys


def parse(path: str) -> tuple:
    """``(phase statuses {name: dict}, summaries {name: [dict, …]}, test files [dict, …])``."""
    status, summaries, tests = {}, {}, []
    for line in open(path):
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        name = fields.pop("phase", "?")
        if "status" in fields:
            status[name] = fields
        elif "file" in fields:
            tests.append(fields)
        else:
            summaries.setdefault(name, []).append(fields)
    return status, summaries, tests


def num(d: dict, key: str) -> float:
    try:
        return float(d.get(key, "nan"))
    except ValueError:
        return float("nan")


def mark(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def main(argv: list) -> int:
    path, mode = argv[1], (argv[2] if len(argv) > 2 else "full")
    status, summaries, tests = parse(path)
    pre = status.get("preflight", {})
    bad = [n for n, s in status.items() if s.get("status") not in ("ok",)]
    rows = [f"GPU check ({'dry run on CPU, tiny shapes: timings mean nothing' if mode == 'dry' else 'full'}) — "
            f"{pre.get('device', '?').replace('_', ' ')}, torch {pre.get('torch', '?')}",
            f"{'phase':<12}{'status':<9}{'s':>5}  result"]

    def row(name: str, text: str) -> None:
        s = status.get(name, {})
        rows.append(f"{name:<12}{s.get('status', 'absent'):<9}{s.get('seconds', ''):>5}  {text}")

    row("preflight", "imports " + pre.get("imports", "?"))
    failed_tests = sum(int(t.get("failed", 0)) + int(t.get("errors", 0)) for t in tests)
    row("gpu_tests", "; ".join(f"{t['file']}: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                               f"{t['skipped']} skipped" for t in tests) or "no result")
    gen = (summaries.get("generation") or [{}])[-1]
    if gen:
        graph = "yes" if gen.get("cuda_graph") == "1" else "NO"
        row("generation", f"ours {num(gen, 'ours_tok_s'):,.0f} tok/s, CUDA graph {graph}")
        sp, st = num(gen, "speedup"), num(gen, "speedup_vs_static")
        rows.append(f"{'':<26}vs generate dynamic cache {num(gen, 'hf_generate_tok_s'):,.0f} tok/s: {sp:.2f}x "
                    f"[{mark(sp >= 8)} target >= 8x, ambition 20x]")
        if num(gen, "hf_static_tok_s") > 0:
            rows.append(f"{'':<26}vs generate static cache  {num(gen, 'hf_static_tok_s'):,.0f} tok/s: {st:.2f}x "
                        f"[{mark(st > 1)} target > 1x]")
        else:
            rows.append(f"{'':<26}vs generate static cache  not measured (failed or out of time: generation.log)")
        rows.append(f"{'':<26}{100 * num(gen, 'fraction_of_bound'):.1f}% of the memory-bandwidth bound "
                    f"{num(gen, 'bound_tok_s'):,.0f} tok/s")
    else:
        row("generation", "no result")
    for name in [n for n in status if n.startswith("grpo")]:
        g = (summaries.get(name) or [{}])[-1]
        if not g:
            row(name, "no result")
            continue
        step = num(g, "ours_step_s") / num(g, "trl_step_s")
        mem = num(g, "ours_peak_gib") / num(g, "trl_peak_gib")
        mfu = num(g, "ours_mfu")
        row(name, f"{g.get('precision', '?')} precision, model {g.get('model', '?')}, CUDA graph "
                  f"{'yes' if g.get('ours_cuda_graph') == '1' else 'NO'}")
        rows.append(f"{'':<26}step ours {num(g, 'ours_step_s'):.3f} s / TRL {num(g, 'trl_step_s'):.3f} s = {step:.2f}x "
                    f"[{mark(step <= 0.25)} target <= 0.25x]")
        rows.append(f"{'':<26}peak ours {num(g, 'ours_peak_gib'):.2f} / TRL {num(g, 'trl_peak_gib'):.2f} GiB "
                    f"= {mem:.2f}x "
                    f"[{mark(mem <= 1)} target <= 1x]")
        rows.append(f"{'':<26}training MFU ours {100 * mfu:.1f}% (TRL {100 * num(g, 'trl_mfu'):.1f}%) of a measured "
                    f"{num(g, 'peak_tflops'):.3g} TFLOP/s matmul [{mark(mfu >= 0.40)} target >= 40%]")
    verdict = "all phases ran" if not bad and not failed_tests else \
        f"PROBLEMS: {', '.join(bad + (['gpu tests failed'] if failed_tests else []))} (see log.txt and the phase logs)"
    rows.append(verdict)
    print("\n".join(rows))
    return 1 if bad or failed_tests else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
