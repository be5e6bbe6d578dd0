"""Prepared training jobs keep a source for their arrays, not the arrays (issue #15: at the
paper's 39k products the 18 jobs' dense per-pair arrays would not fit in memory at once)."""

import pickle

import numpy as np
import torch

from catret_pipeline.fusion.config import FusionTrainConfig
from catret_pipeline.fusion.features import MODEL_SPECS, CategoryVectors, ProductFeatureTables
from catret_pipeline.fusion.fingerprint import data_fingerprint, training_key
from catret_pipeline.fusion.jobs import TrainingJob, prepare_training
from catret_pipeline.fusion.runner import run_jobs
from catret_pipeline.storage.resources import CatretStorage
from catret_pipeline_tests.fusion.test_assets import write_fixture

CONFIG = FusionTrainConfig(min_steps=0, proj_dim=8, hidden_dims=(16, 16), epochs=2, device="cpu")


def _prepared(tmp_path, models=("clip-i", "clip-ita-tree"), settings=("all", "specific")):
    tables = write_fixture(tmp_path)
    products = ProductFeatureTables.from_frames(
        tables["image_embeddings"], tables["title_embeddings"], tables["attribute_embeddings"]
    )
    categories = CategoryVectors.from_frame(tables["category_embeddings"])
    return [
        prepare_training(
            CatretStorage(data_dir=str(tmp_path)),
            MODEL_SPECS[m],
            s,
            tables["evaluation_pairs"],
            products,
            categories,
            CONFIG,
            category_tree=tables["category_tree"],
        )
        for m in models
        for s in settings
    ]


def test_prepared_jobs_hold_no_pair_arrays_and_share_the_product_tables(tmp_path):
    jobs = _prepared(tmp_path)
    assert all(isinstance(j, TrainingJob) for j in jobs)
    assert all(j.train is None and j.val is None for j in jobs)
    # One set of tables for every job: no job carries its own copy of the vectors.
    assert len({id(j.source.products) for j in jobs}) == 1
    assert len({id(j.source.categories) for j in jobs}) == 1
    assert [j.n_train for j in jobs] == [j.row["n_train"] for j in jobs]


def test_the_rebuilt_arrays_are_the_ones_fingerprinted(tmp_path):
    for job in _prepared(tmp_path):
        train, val = job.data()
        assert len(train) == job.n_train and len(val) == job.row["n_val"]
        # Built in a worker process from a pickled source: the same bytes as in the parent.
        train2, val2 = pickle.loads(pickle.dumps(job)).data()
        for a, b in ((train, train2), (val, val2)):
            assert np.array_equal(a.products, b.products)
            assert np.array_equal(a.categories, b.categories)
            assert np.array_equal(a.category_codes, b.category_codes)
        fp = data_fingerprint(job.spec, job.setting, job.batch_size, job.config, True, train2, val2)
        assert fp == job.fingerprint
        assert training_key(job.spec, train2, val2, job.batch_size, job.config) == (
            job.training_key
        )


def test_a_job_trains_the_same_from_its_source_as_from_its_arrays(tmp_path):
    import dataclasses

    lean = _prepared(tmp_path, models=("clip-i", "clip-ita"), settings=("all",))
    held = [dataclasses.replace(j, train=j.data()[0], val=j.data()[1], source=None) for j in lean]
    a = run_jobs(lean, workers=2)  # the sources travel to worker processes
    b = run_jobs(held, workers=1)
    assert sorted(a) == sorted(b) == [0, 1]
    for i in a:
        sa, sb = a[i][0].state_dict, b[i][0].state_dict
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
