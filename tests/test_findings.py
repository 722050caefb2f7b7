"""The intro's computed findings (spreadcon.book.findings): each one's words follow the verdict rule,
so they flip when the numbers do, and the numbers they print are the records' own."""

from __future__ import annotations

import math
import re
import statistics

import pytest
from scipy.stats import t as student_t

from spreadcon.book import findings as F
from spreadcon.book import report


def rec(dataset, method, seed, metrics, *, preset="cpu", task="transfer", by_epoch=None, config=None):
    r = {"task": task, "dataset": dataset, "preset": preset, "method": method, "seed": seed,
         "alpha_override": None, "metrics": dict(metrics),
         "provenance": {"config": dict(config or {"temperature": 0.1, "train_size": 1000, "epochs": 100})}}
    if by_epoch is not None:
        r["metrics_by_epoch"] = {str(e): m for e, m in by_epoch.items()}
    return r


def arm(dataset, method, values, metric="fine_test_acc", **kw):
    """One record per seed, ``values`` the metric per seed."""
    return [rec(dataset, method, s, {metric: v}, **kw) for s, v in enumerate(values)]


TIGHT = (0.0, 0.002, -0.002)   # seed noise of 0.2 points


@pytest.mark.parametrize("shift, words", [(+0.05, "above SupCon beyond seed noise on MNIST"),
                                          (-0.05, "below it beyond seed noise on MNIST"),
                                          (+0.001, "within seed noise of it on MNIST")])
def test_cnce_lift_words_follow_the_verdict(shift, words):
    recs = arm("mnist", "supcon", [0.90 + e for e in TIGHT]) + arm("mnist", "spread", [0.90 + shift + e for e in TIGHT])
    f = F.cnce_lift(recs)
    assert words in f.text
    assert f.chapters[0] == "05_transfer"


def test_cnce_lift_prints_the_records_difference_and_its_welch_interval():
    a, b = [0.93, 0.95, 0.96], [0.90, 0.91, 0.93]
    text = F.cnce_lift(arm("mnist", "spread", a) + arm("mnist", "supcon", b)).text
    # the slow, obvious reference: Welch's interval written out by hand
    va, vb = statistics.variance([100 * x for x in a]) / 3, statistics.variance([100 * x for x in b]) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    delta = 100 * (statistics.mean(a) - statistics.mean(b))
    half = student_t.ppf(0.975, df) * math.sqrt(va + vb)
    assert f"({delta:+.1f} ± {half:.1f} points)" in text


def test_cnce_lift_sets_cifar10_against_the_paper_size():
    base = [0.40 + e for e in TIGHT]
    small = F.cnce_lift(arm("cifar10", "supcon", base) + arm("cifar10", "spread", [x + 0.03 for x in base])).text
    big = F.cnce_lift(arm("cifar10", "supcon", base) + arm("cifar10", "spread", [x + 0.20 for x in base])).text
    gap = report.PAPER_CIFAR10_FINE_ACC["spread"] - report.PAPER_CIFAR10_FINE_ACC["supcon"]
    assert f"{gap:+.1f} points" in small and "The paper reports" in small
    assert "the size is smaller" in small and "at least half the paper's" in big


def long_cosines(dataset, first, last, method="supcon"):
    return [rec(dataset, method, s, {"fine_test_acc": 0.5}, preset="cpu-long",
                by_epoch={1: {"within_class_cosine": first + e}, 40: {"within_class_cosine": last + 2 * e}})
            for s, e in enumerate((0.0, 0.003, -0.004))]


def test_collapse_says_spread_when_the_cosine_falls_and_contract_when_it_rises():
    falls = F.collapse(long_cosines("mnist", 0.92, 0.77)).text
    rises = F.collapse(long_cosines("mnist", 0.77, 0.92)).text
    assert "does not collapse its classes as it trains" in falls and "0.92 after epoch 1, 0.77 after epoch 40" in falls
    assert "classes contract as it trains" in rises and "rises on MNIST" in rises
    mixed = F.collapse(long_cosines("mnist", 0.92, 0.77) + long_cosines("cifar10", 0.80, 0.80)).text
    assert "falls" in mixed and "does not change beyond seed noise" in mixed


def test_collapse_reads_the_premise_preset_on_train_and_held_out_images():
    premise = [rec("mnist", m, s, {"train_within_class_cosine": tr + e, "within_class_cosine": te + e,
                                   "fine_test_acc": 0.9}, preset="collapse")
               for m, tr, te in (("supcon", 0.96, 0.95), ("spread", 0.64, 0.52)) for s, e in enumerate(TIGHT)]
    text = F.collapse(premise).text
    assert "0.96 on the training images and 0.95 held out on MNIST" in text
    assert "SupCon + cNCE: 0.52 held out, lower beyond seed noise" in text
    assert "temperature 0.1, 1,000 training images, 100 epochs" in text
    assert F.collapse([]) is None


def width_records(thanos_shift):
    base = [0.45 + e for e in TIGHT]
    return arm("cifar10", "spread-pair", base) + arm("cifar10", "thanos", [x + thanos_shift for x in base])


def test_thanos_width_credits_the_autoencoder_only_where_it_beats_the_pair():
    tied = F.thanos_width(width_records(0.0)).text
    above = F.thanos_width(width_records(0.05)).text
    assert "nothing here credits the autoencoder" in tied and "within seed noise of them on CIFAR-10 at 100 epochs" in tied
    assert "adds something beyond a second network in 1 of these 1 comparisons" in above
    assert F.thanos_width(arm("cifar10", "thanos", [0.5, 0.5])) is None  # no pair: no finding


def test_thanos_width_names_collapse_preset_cells_by_the_preset():
    """A collapse-preset cell is named by its preset (it changes temperature and data size as well as
    epochs), beside a cpu cell named by its epochs; an unknown preset is not read."""
    base = [0.40 + e for e in TIGHT]
    recs = []
    for preset in ("cpu", "collapse", "other"):
        recs += arm("mnist", "thanos", base, preset=preset, config={"epochs": 5})
        recs += arm("mnist", "spread-pair", base, preset=preset, config={"epochs": 5})
    text = F.thanos_width(recs).text
    assert "MNIST at 5 epochs" in text and "MNIST at the collapse preset" in text
    assert "in 0 of these 2" not in text and text.count("MNIST at") == 2


def test_thanos_vs_supcon_counts_its_coverage_and_never_says_reproduced():
    base = [0.40 + e for e in TIGHT]
    recs = (arm("mnist", "supcon", base) + arm("mnist", "thanos", [x + 0.05 for x in base])
            + arm("cifar10", "supcon", base) + arm("cifar10", "thanos", [x + 0.05 for x in base]))
    text = F.thanos_vs_supcon(recs).text
    assert "averaged over the 2 of those 5 recorded here (MNIST and CIFAR-10)" in text
    assert "above SupCon beyond seed noise (+5.0" in text and "does not reproduce the paper's number" in text
    worse = F.thanos_vs_supcon(arm("mnist", "supcon", base) + arm("mnist", "thanos", [x - 0.05 for x in base])).text
    assert "below SupCon beyond seed noise" in worse and "does not reproduce" not in worse


def lift_records(dataset, lift_first, lift_last):
    out = []
    for s, e in enumerate(TIGHT):
        for m, (l1, l40) in (("supcon", (0.0, 0.0)), ("spread", (lift_first, lift_last))):
            out.append(rec(dataset, m, s, {"fine_test_acc": 0.5}, preset="cpu-long",
                           by_epoch={1: {"fine_test_acc": 0.5 + l1 + e}, 40: {"fine_test_acc": 0.5 + l40 + 2 * e}}))
    return out


def test_training_length_grows_or_shrinks_with_the_records():
    grows = F.training_length(lift_records("cifar10", 0.007, 0.085)).text
    shrinks = F.training_length(lift_records("cifar10", 0.085, 0.007)).text
    assert "grows on CIFAR-10 (+0.7 points after epoch 1, +8.5 after epoch 40)" in grows
    assert "shrinks on CIFAR-10" in shrinks
    assert "ViT trained for 600 epochs" in grows  # the paper preset's scale, read from spreadcon.presets


def robustness_records(thanos_ami, recall=0.0):
    out = []
    for d in ("mnist-cifar", "cifar-patch"):
        for m, a in (("ce", 0.08), ("thanos", thanos_ami)):
            out += [rec(d, m, s, {"worst_group_acc": 0.5, "avg_acc": 0.7, "inferred_group_ami": a + e / 10,
                                  "minority_recall": recall}, task="robustness") for s, e in enumerate(TIGHT)]
    return out


def test_subgroups_words_flip_and_count_minority_recall():
    worse = F.subgroups(robustness_records(0.01)).text
    better = F.subgroups(robustness_records(0.30, recall=0.4)).text
    assert "worse than clustering a cross-entropy model's on both" in worse
    assert "In none of its 6 runs does a cluster isolate a minority group" in worse
    assert "better than clustering" in better and "in 6 of its 6 runs" in better
    assert "GEORGE" not in worse  # the paper's abstract gives no subgroup margin over GEORGE: none is quoted


def test_markdown_links_each_finding_to_its_chapters_and_escapes_record_strings():
    recs = arm("<b>x</b>", "supcon", [0.5 + e for e in TIGHT]) + arm("<b>x</b>", "spread", [0.6 + e for e in TIGHT])
    md = F.findings_markdown(recs)
    assert md.startswith("1. **Adding cNCE to SupCon.**")
    assert "[chapter 5](05_transfer), [chapter 4](04_thanos)" in md
    assert "<b>" not in md and r"\<b\>x\</b\>" in md
    assert F.findings_markdown([]).startswith("No committed records yet")


def test_the_committed_records_give_every_finding():
    got = F.findings(F.load(report.default_results_dir()))
    assert [f.key for f in got] == ["collapse", "cnce", "thanos", "width", "length", "subgroups"]
    for f in got:
        assert re.match(r"\*\*[^*]+\*\* ", f.text) and "`" not in f.text  # a headline; no code spans on the page


README = """# x

### How long it takes

Measured on the 2-core CPU this book is built on (`make book`, empty cache).

| page | quiet (earlier edition) | {newest} |
|---|---|---|
| 1. Class collapse | 25 s | 63 s |
| whole `make book` | 2.5 min | 23 min |

## Publishing
"""


def test_run_times_read_the_newest_column_and_say_whether_the_machine_was_quiet():
    busy = F.run_times(README.format(newest="busy (fresh clone, load ~6)"))
    assert busy.machine == "the 2-core CPU this book is built on" and not busy.quiet
    assert busy.times == {"1. Class collapse": "63 s", "whole make book": "23 min"}
    assert "busy, so an upper bound" in busy.sentence() and "`" not in busy.sentence()
    quiet = F.run_times(README.format(newest="quiet (fresh clone)"))
    assert quiet.quiet and "on a quiet machine: 1. Class collapse 63 s" in quiet.sentence()
    with pytest.raises(ValueError, match="quiet or busy"):
        F.run_times(README.format(newest="fresh clone"))
    with pytest.raises(ValueError, match="How long it takes"):
        F.run_times("# nothing here")


def test_the_repository_readme_gives_the_run_times():
    from pathlib import Path

    times = F.run_times((Path(__file__).resolve().parents[1] / "README.md").read_text())
    assert times.times and times.machine


def test_the_cnce_finding_adds_the_collapse_preset_where_its_records_exist():
    cpu = arm("cifar10", "supcon", [0.40 + e for e in TIGHT]) + arm("cifar10", "spread", [0.43 + e for e in TIGHT])
    assert "collapse preset" not in F.cnce_lift(cpu).text
    col = [{**r, "preset": "collapse"} for r in
           arm("cifar10", "supcon", [0.38 + e for e in TIGHT]) + arm("cifar10", "spread", [0.46 + e for e in TIGHT])]
    text = F.cnce_lift(cpu + col).text
    assert "Where SupCon does collapse (the collapse preset), SupCon + cNCE is above SupCon beyond seed noise" in text
    flat = [{**r, "preset": "collapse"} for r in
            arm("cifar10", "supcon", [0.40 + e for e in TIGHT]) + arm("cifar10", "spread", [0.40 + e for e in TIGHT])]
    assert "within seed noise of SupCon on CIFAR-10" in F.cnce_lift(cpu + flat).text
