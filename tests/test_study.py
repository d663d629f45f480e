"""``featstore study``: two data sets (one with a ``patient`` column) x tiny_cnn, two inits;
the tidy table, the report with its cross-set figure, ``open_study``, reruns that recompute
nothing, and study files that are refused with one line naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from featstore.cli.app import main

import featstore
from featstore.results import list_runs, open_results
from featstore.study import STUDY_COLUMNS, open_study, run_study
from featstore.study_config import StudyConfigError, parse_study, read_study, store_name
from helpers import SHARED_DATA, make_image_folder

STUDY = """\
[study]
name = "two-sets"

[[dataset]]
name = "plain"
data = "plain"

[[dataset]]
name = "patients"
data = "patients/m.csv"
group = "patient"
folds = 3

[extract]
models = ["tiny_cnn"]
inits = ["pretrained", "random:0"]
image_size = 12
device = "cpu"

[probe]
classifiers = ["nearest-centroid"]
folds = 3
n_boot = 50
"""


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0)


def _study_folder(root: Path) -> Path:
    make_image_folder(root / "plain", classes=("x", "y", "z"), per_class=9, seed=1)
    data = root / "patients"
    make_image_folder(data, classes=("u", "v"), per_class=12, seed=2)
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    with (data / "m.csv").open("w") as handle:
        handle.write("path,label,patient\n")
        handle.writelines(f"{p},{p.split('/')[0]},P{i % 6}\n" for i, p in enumerate(paths))
    (root / "study.toml").write_text(STUDY)
    return root / "study.toml"


def _mtimes(folder: Path) -> dict[str, int]:
    """Modification times of every data file (feature chunks, coordinates, done markers,
    probe results); metadata documents (zarr.json), which a rerun may rewrite, left out."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and p.name != "zarr.json"}


def test_study_over_two_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _study_folder(tmp_path)
    out = tmp_path / "out"
    assert _cli(["study", str(study), "--out", str(out), "-q"]) == 0
    capsys.readouterr()

    table = pd.read_csv(out / "study.csv")
    assert list(table.columns) == [c for c in STUDY_COLUMNS if c != "baseline"]
    assert sorted(set(table["dataset"])) == ["patients", "plain"]
    assert set(table["layer"]) == {"stem", "block"}
    assert table["depth"].between(0, 1).all() and (table["params_up_to_layer"] > 0).all()
    np.testing.assert_allclose(table["gain"], table["pretrained"] - table["random"], atol=1e-12)
    assert (table["ci_low"] <= table["gain"]).all() and (table["gain"] <= table["ci_high"]).all()
    # params: tiny_cnn's stem is conv 3->4 (3x3) + BN(4): 112 + 8; block adds conv 4->6 + BN(6)
    stem = table[table["layer"] == "stem"]["params_up_to_layer"].unique().tolist()
    block = table[table["layer"] == "block"]["params_up_to_layer"].unique().tolist()
    assert stem == [3 * 4 * 9 + 4 + 8] and block == [stem[0] + 4 * 6 * 9 + 6 + 12]

    report = (out / "report.md").read_text()
    figure = re.search(r"\]\((figures/gain_by_depth_accuracy\.png)\)", report)
    assert figure is not None and (out / figure.group(1)).stat().st_size > 10_000
    assert "Transfers everywhere?" in report and "Leak check" in report
    assert "patient (6 groups)" in report
    assert (out / "report.html").read_text().count("<img") == 2

    ds = featstore.open_study(out)
    assert ds["gain"].dims[:2] == ("dataset", "model")
    assert list(ds["dataset"].values) == ["plain", "patients"]
    assert list(ds["layer"].values) == ["stem", "block"]
    for row in table.itertuples(index=False):
        cell = ds.sel(dataset=row.dataset, model=row.model, layer=row.layer,
                      classifier=row.classifier, metric=row.metric)
        assert float(cell["gain"]) == pytest.approx(row.gain, abs=1e-12)

    # the grouped data set's results keep each patient in one test fold
    store = str(out / "stores" / store_name("patients", "tiny_cnn"))
    results = open_results(store)
    patients = np.asarray([str(v) for v in featstore.open_store(store)["patient"].values])
    folds = np.asarray(results["test_fold"].values)
    assert results.attrs["featstore_probe"]["grouping"]["by"] == "patient"
    for patient in set(patients):
        assert len(set(folds[patients == patient].tolist())) == 1

    # a rerun recomputes nothing: no store file is rewritten, no probe run is added
    stores = out / "stores"
    before = _mtimes(stores)
    runs = {name: list(list_runs(str(p))) for name, p in
            ((p.name, p) for p in stores.iterdir())}
    files = run_study(read_study(study), out)
    assert files.computed == {"extracted": 0, "probed": 0}
    assert _mtimes(stores) == before
    assert {p.name: list(list_runs(str(p))) for p in stores.iterdir()} == runs
    assert pd.read_csv(out / "study.csv").equals(table)


@pytest.mark.parametrize(("edit", "key"), [
    (("[probe]\n", "[probe]\nfolds_ = 3\n"), "probe.folds_: unknown key"),
    (("[extract]\n", "[extrakt]\n"), "extrakt: unknown table or key"),
    (('name = "plain"\n', 'name = "plain"\ncolour = "red"\n'), "dataset.colour: unknown key"),
    (('data = "plain"', 'data = "nowhere"'), "dataset 'plain'.data: 'nowhere' does not exist"),
    (('name = "patients"', 'name = "plain"'), "dataset 'plain'.name: duplicate data set name"),
    (('models = ["tiny_cnn"]', 'models = ["tiny_cn"]'), "extract.models: unknown model"),
    (('inits = ["pretrained", "random:0"]', 'inits = ["random:0"]'),
     "extract.inits: knowledge gain needs exactly one pretrained init"),
    (("folds = 3\nn_boot", "folds = 1\nn_boot"), "probe.folds: must be an integer >= 2"),
    (('name = "two-sets"', 'name = "two sets"'), "study.name"),
    (("[study]", "[study"), "is not valid TOML"),
    (('device = "cpu"', 'device = "cpu"\nscheduler = "threads:2"'), "extract.scheduler"),
])
def test_bad_study_files_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              edit: tuple[str, str], key: str) -> None:
    study = _study_folder(tmp_path)
    text = study.read_text()
    assert edit[0] in text
    study.write_text(text.replace(edit[0], edit[1], 1))
    assert _cli(["study", str(study), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0], err
    assert not (tmp_path / "out").exists()


def test_parse_study_normalizes_and_is_pure(tmp_path: Path) -> None:
    config = parse_study(STUDY, base=tmp_path, source="s.toml")
    assert [d.data for d in config.datasets] == [str(tmp_path / "plain"),
                                                 str(tmp_path / "patients/m.csv")]
    assert config.folds_of(config.datasets[1]) == 3 and config.folds_of(config.datasets[0]) == 3
    assert config.datasets[1].group == "patient" and config.n_boot == 50
    assert config.to_dict()["inits"] == ["pretrained", "random:0"]
    with pytest.raises(StudyConfigError, match=r"group \(an image coordinate\) or group_regex"):
        parse_study(STUDY.replace('group = "patient"', 'group = "patient"\ngroup_regex = "(a)"'))
    with pytest.raises(StudyConfigError, match="has no capture group"):
        parse_study(STUDY.replace('group = "patient"', 'group_regex = "a"'))
    assert store_name("lung", "timm:resnet18.a1_in1k") == "lung__timm-resnet18.a1_in1k.zarr"


def test_study_errors_of_a_dataset_name_it(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    study = _study_folder(tmp_path)
    study.write_text(study.read_text().replace("folds = 3\n\n[extract]", "folds = 7\n\n[extract]"))
    assert _cli(["study", str(study), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "dataset 'patients', model 'tiny_cnn': --folds 7 needs at least 7 groups" in err[0]


def test_study_on_the_shared_data(tmp_path: Path) -> None:
    """The Kather tiles grouped by slide (CRC-Prim-HE-NN): no slide in two test folds."""
    crc = SHARED_DATA / "kather2016_crc"
    if not crc.is_dir():
        pytest.skip(f"shared data not present ({crc})")
    study = tmp_path / "study.toml"
    study.write_text(f"""\
[[dataset]]
name = "crc"
data = "{crc}"
group_regex = 'CRC-Prim-HE-(\\d+)'
[extract]
models = ["tiny_cnn"]
inits = ["pretrained", "random:0"]
image_size = 16
device = "cpu"
[probe]
classifiers = ["nearest-centroid"]
n_boot = 50
""")
    files = run_study(read_study(study), tmp_path / "out")
    store = files.stores[("crc", "tiny_cnn")]
    results = open_results(store)
    paths = [str(p) for p in featstore.open_store(store)["path"].values]
    slides = np.asarray([re.findall(r"CRC-Prim-HE-(\d+)", p)[0] for p in paths])
    folds = np.asarray(results["test_fold"].values)
    assert len(set(slides.tolist())) == 10 and results.sizes["fold"] == 5
    for slide in set(slides.tolist()):
        assert len(set(folds[slides == slide].tolist())) == 1
    info = open_study(files.out).attrs["featstore_study"]["runs"][0]
    assert info["grouping"]["n_groups"] == 10 and info["leaks"]["checked"] is True
    assert sum(info["groups_per_fold"]) == 10


def test_several_baselines_give_a_baseline_dimension(tmp_path: Path) -> None:
    """Rows of two data sets with a random and a random+bn baseline: study.csv gets a baseline
    column, open_study a baseline dimension, and the report is written from the first one."""
    from _report_data import make_results
    from featstore.gain import knowledge_gain
    from featstore.report.study import sweet_spots, transfer_counts, write_study_report
    from featstore.study import _csv_frame, study_rows

    frames = []
    for k, name in enumerate(("one", "two")):
        results = make_results(layers=("stem", "blocks.0", "head"),
                               inits=("pretrained", "random:0", "random:1", "random:0+bn"),
                               n_images=30, n_classes=3, seed=k)
        gain = knowledge_gain(results, n_boot=30)
        frames.append(study_rows(gain, name, "m", {"stem": 10, "blocks.0": 100, "head": 1000}))
    table = _csv_frame(frames)
    assert "baseline" in table.columns and set(table["baseline"]) == {"random", "random+bn"}
    table.to_csv(tmp_path / "study.csv", index=False)
    ds = open_study(tmp_path)
    assert ds["gain"].dims == ("dataset", "model", "layer", "classifier", "metric", "baseline")
    assert list(ds["layer"].values) == ["stem", "blocks.0", "head"]
    np.testing.assert_allclose(ds["depth"].sel(model="m").values, [0.0, 0.5, 1.0])
    view = ds.sel(classifier="logreg:C=1", metric="accuracy", baseline="random")
    counts = transfer_counts(view)
    for row in counts.itertuples(index=False):
        low = view["ci_low"].sel(layer=row.layer).values
        high = view["ci_high"].sel(layer=row.layer).values
        assert row.above == int((low > 0).sum()) and row.below == int((high < 0).sum())
        assert row.above + row.straddles + row.below == 2
    spots = sweet_spots(view)
    assert len(spots) == 2 and set(spots["sweet_params"]) <= {10, 100, 1000}
    files = write_study_report(ds, tmp_path)
    assert files.markdown.is_file() and len(files.figures) == 2


def test_the_extract_scheduler_reaches_featstore_extract(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import featstore.extraction

    study = _study_folder(tmp_path)
    study.write_text(study.read_text().replace('device = "cpu"',
                                               'device = "cpu"\nscheduler = "local:2"'))
    calls: list[dict[str, object]] = []

    class Stop(Exception):
        pass

    def record(data: str, store: str, **options: object) -> None:
        calls.append({"data": data, "store": store, **options})
        raise Stop

    monkeypatch.setattr(featstore.extraction, "extract", record)
    with pytest.raises(Stop):
        run_study(read_study(study), tmp_path / "out")
    assert calls[0]["scheduler"] == "local:2" and calls[0]["image_size"] == 12
    assert calls[0]["store"] == str(tmp_path / "out" / "stores" / "plain__tiny_cnn.zarr")
    assert calls[0]["inits"] == ("pretrained", "random:0")
