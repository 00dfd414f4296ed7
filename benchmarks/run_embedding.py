"""Sentence embedders compressed to 1 bit (issue 36), one row at a time.

Each row writes benchmarks/results/embedding/ROW-SEED.json when it finishes; a row whose file exists
is skipped. Runs go to runs/bench/embedding-ROW-SEED/ (not committed) and resume after an
interruption.

    python benchmarks/run_embedding.py --rows minilm_fp32 minilm_w1a8
    python benchmarks/run_embedding.py --rows mpnet_fp32 mpnet_6l_w1a8 --mpnet-dir ~/.cache/xtc-models/all-mpnet-base-v2

Rows:
  minilm_fp32      all-MiniLM-L6-v2 as it is (FP32): the teacher of the MiniLM rows and the model people pick
  minilm_w1a8      all 6 layers, binary weights, 8-bit activations, KD from minilm_fp32
                   (recipes/embedding-minilm-w1a8.yaml)
  minilm_w1a8_emb1 the same with the embedding term weighted 1 instead of 10 (emb_weight)
  minilm_w1a8_4ep_bf16_att01   4 epochs (bf16), the attention term weighted 0.1 instead of 1
  minilm_w1a8_4ep_bf16_row     4 epochs (bf16), one weight scale per output row (groups: row)
  minilm_w1a8_4ep_bf16_emb30   4 epochs (bf16), the embedding term weighted 30 instead of 10
  minilm_w1a8_4ep_bf16_sim     the same plus the in-batch similarity term (sim_weight 1000)
  minilm_w1a8_4ep_bf16_emb30_sst2   emb30 with SST-2's training phrases added to the corpus, same steps
  minilm_w1a8_4ep_bf16_emb30_lat3   emb30 with the latent weights' rate 3x the learning rate (xtc: 10x)
  minilm_w1a8_4ep_bf16_emb30_warm10 emb30 warming up over a tenth of the budget (0.4 epoch) instead of 0.67 epoch
  minilm_w1a8_4ep_bf16_emb30_we2    emb30 with a 2-bit (ternary) word embedding beside the binary linears
  minilm_w1a8_4ep_bf16_emb30_we2_row   we2 with one weight scale per output row of every linear
  minilm_w1a8_4ep_bf16_emb30_we2_att01 we2 with the attention term weighted 0.1 instead of 1
                   (recipes/embedding-minilm-w1a8-we2.yaml)
  minilm_w1a8_4ep_bf16_emb30_we2_att01_drop0   we2_att01 with the student's dropout off (xtc's default now)
  minilm_w1a8_4ep_bf16_emb30_att01     emb30 with the attention term weighted 0.1: we2_att01 all binary
  mpnet_fp32       all-mpnet-base-v2 as it is (FP32, 12 layers)
  mpnet_6l_w1a8_2ep_bf16   mpnet_6l_w1a8's FP32 6-layer copy, 2 epochs of binary QAT (bf16)
  mpnet_6l_w1a8_4ep_bf16_emb30_att01   the same copy, 4 epochs, embedding term 30, attention term 0.1
                   (recipes/embedding-mpnet-6l-w1a8-4ep.yaml)
  mpnet_6l_w1a8_4ep_bf16_emb30_we2_att01_row   that row's copy and settings with a 2-bit word embedding
                   and one weight scale per output row (recipes/embedding-mpnet-6l-w1a8-we2.yaml)
  mpnet_6l_w1a8_4ep_bf16_emb30_att01_row_ffn2   the same with a binary word embedding and the FFN's
                   up-projections at 2 bits (ternary) instead, every other linear binary (module_bits;
                   recipes/embedding-mpnet-6l-mixed.yaml)
  mpnet_6l_w1a8_4ep_bf16_emb30_att01_row_ffn2_qkv2_copy1ep   ffn2 with the attention's query, key and
                   value projections ternary too, from its own FP32 copy trained a whole epoch (bf16)
  ..._qkv2_copy1ep_drop0   the same from the same copy, the student's dropout off in the binary stage
  mpnet_6l_w1a8 / mpnet_5l_w1a8   layers [1,3,5,7,9,11] / [2,4,6,8,10] copied (FP32 KD stage), then binary
                   weights with KD from mpnet_fp32 (recipes/embedding-mpnet-6l-w1a8.yaml, -5l-)

Training data: the default corpus (the distinct sentences of the STS-B, MRPC, RTE and CoLA training
sets, no labels). Scores: STS-B dev Spearman of the cosine similarity, MRPC dev retrieval (recall@1,
MRR). The checkpoint is the one at the end of the budget (select_on last): ``metrics`` is the end of
the budget, ``best_dev`` the best of the evaluations on the way (chosen on the dev sets it reports:
shown beside, never alone).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
RESULTS = HERE / "results" / "embedding"
RUNS = ROOT / "runs" / "bench"


@dataclass(frozen=True)
class Row:
    family: str  # minilm | mpnet
    recipe: str | None = None  # recipes/NAME.yaml; None: the model as it is (FP32, no training)
    emb_weight: float | None = None  # an ablation: the recipe with another weight of the embedding term
    att_weight: float | None = None  # an ablation: the recipe with another weight of the attention term
    qat: tuple = ()  # an ablation: (field, value) pairs replacing the recipe's QAT settings (TrainConfig)
    quant: tuple = ()  # an ablation: (field, value) pairs replacing the recipe's quantization (QuantConfig)
    distill: tuple = ()  # an ablation: (field, value) pairs replacing the recipe's KD loss (DistillConfig)
    reduce: tuple = ()  # an ablation: (field, value) pairs replacing the recipe's FP32 copy stage's settings
    # GLUE tasks whose training sentences join the default corpus; the budget stays the default corpus's
    # steps (same compute, fewer repeats of each sentence)
    extra_corpus: tuple[str, ...] = ()
    reuse_reduced: str | None = None  # a row whose finished FP32 layer-reduction stage this one starts from


ROWS = {
    "minilm_fp32": Row("minilm"),
    "minilm_w1a8": Row("minilm", "embedding-minilm-w1a8"),
    "minilm_w1a8_emb1": Row("minilm", "embedding-minilm-w1a8", emb_weight=1.0),
    "minilm_w1a8_bf16": Row("minilm", "embedding-minilm-w1a8", qat=(("bf16", True),)),
    "minilm_w1a8_4ep_bf16": Row("minilm", "embedding-minilm-w1a8", qat=(("bf16", True), ("epochs", 4.0))),
    "minilm_w1a8_8ep_bf16": Row("minilm", "embedding-minilm-w1a8", qat=(("bf16", True), ("epochs", 8.0),
                                                                       ("eval_steps", 958))),
    "minilm_w1a8_4ep_bf16_att01": Row("minilm", "embedding-minilm-w1a8", att_weight=0.1,
                                      qat=(("bf16", True), ("epochs", 4.0))),
    # one weight scale per output row instead of one per matrix (the packed file keeps one float per row)
    "minilm_w1a8_4ep_bf16_row": Row("minilm", "embedding-minilm-w1a8", quant=(("groups", "row"),),
                                    qat=(("bf16", True), ("epochs", 4.0))),
    # the embedding term weighted 30 instead of 10 (1 -> 10 gained 3.1 points of STS-B at 2 epochs)
    "minilm_w1a8_4ep_bf16_emb30": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0,
                                      qat=(("bf16", True), ("epochs", 4.0))),
    # and the in-batch similarity term (MSE between the two cosine-similarity matrices), weighted 1000:
    # after minilm_w1a8_4ep_bf16_emb30 it is ~0.0036 against ~0.17 for the embedding term (1 - cosine)
    "minilm_w1a8_4ep_bf16_sim": Row("minilm", "embedding-minilm-w1a8", distill=(("emb_weight", 30.0),
                                                                                ("sim_weight", 1000.0)),
                                    qat=(("bf16", True), ("epochs", 4.0))),
    # the same with SST-2's 67k training phrases added to the corpus (4 epochs' steps of the default corpus)
    "minilm_w1a8_4ep_bf16_emb30_sst2": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0,
                                           qat=(("bf16", True), ("epochs", 4.0)), extra_corpus=("sst2",)),
    # emb30 with the latent weights' rate at 3x the learning rate instead of xtc's 10x: the curves of the
    # 4-epoch rows gain most in the last quarter, as the rate decays (fewer sign flips back and forth)
    "minilm_w1a8_4ep_bf16_emb30_lat3": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0,
                                           qat=(("bf16", True), ("epochs", 4.0), ("latent_lr_scale", 3.0))),
    # emb30 warming up over a tenth of the budget (0.4 of 4 epochs) instead of the recipe's 0.67 epoch: the
    # shorter warm-up won STS-B by 4.0 points (three seeds) in issue 33's screen of binary GLUE students
    "minilm_w1a8_4ep_bf16_emb30_warm10": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0,
                                             qat=(("bf16", True), ("epochs", 4.0), ("warmup_epochs", 0.4))),
    # emb30 with the word embedding at 2 bits (ternary) beside the binary linears: untrained, the word
    # embedding alone at 1 bit costs 0.8 of STS-B and at 2 bits 0.2 (results/embedding_activations.json)
    "minilm_w1a8_4ep_bf16_emb30_we2": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0,
                                          quant=(("embedding_bits", 2),), qat=(("bf16", True), ("epochs", 4.0))),
    # we2 (the best row, 0.1 short of the goal) with each of the two changes that were level or ahead on
    # the all-binary emb10 row at seed 42: row scales (STS-B +0.0, recall@1 +0.4) and att 0.1 (+0.1)
    "minilm_w1a8_4ep_bf16_emb30_we2_row": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0,
                                              quant=(("embedding_bits", 2), ("groups", "row")),
                                              qat=(("bf16", True), ("epochs", 4.0))),
    "minilm_w1a8_4ep_bf16_emb30_we2_att01": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0, att_weight=0.1,
                                                quant=(("embedding_bits", 2),), qat=(("bf16", True), ("epochs", 4.0))),
    # the same with the word embedding binary too (the paper's setting, the smaller file)
    "minilm_w1a8_4ep_bf16_emb30_att01": Row("minilm", "embedding-minilm-w1a8", emb_weight=30.0, att_weight=0.1,
                                            qat=(("bf16", True), ("epochs", 4.0))),
    "mpnet_fp32": Row("mpnet"),
    "mpnet_6l_w1a8": Row("mpnet", "embedding-mpnet-6l-w1a8"),
    "mpnet_5l_w1a8": Row("mpnet", "embedding-mpnet-5l-w1a8"),
    # two epochs of QAT (bf16) from the same 6-layer FP32 copy (the reduced stage of mpnet_6l_w1a8 is
    # reused when its run folder is there)
    "mpnet_6l_w1a8_2ep_bf16": Row("mpnet", "embedding-mpnet-6l-w1a8", qat=(("bf16", True), ("epochs", 2.0),
                                                                         ("eval_steps", 479), ("warmup_epochs", 0.67)),
                                  reuse_reduced="mpnet_6l_w1a8"),
    # the MiniLM rows' winners at MPNet's scale: 4 epochs, the embedding term at 30, the attention term at
    # 0.1; the word embedding binary (the paper's setting)
    "mpnet_6l_w1a8_4ep_bf16_emb30_att01": Row("mpnet", "embedding-mpnet-6l-w1a8", emb_weight=30.0, att_weight=0.1,
                                              qat=(("bf16", True), ("epochs", 4.0), ("eval_steps", 479),
                                                   ("warmup_epochs", 0.67)),
                                              reuse_reduced="mpnet_6l_w1a8"),
    # the same with the two MiniLM changes that were ahead beside att 0.1: the word embedding at 2 bits
    # (untrained, it costs MPNet 0.4 of STS-B at 2 bits and 1.0 at 1 bit) and one scale per output row;
    # the packed file is 11.24 MB, under issue 36's 11.36 MB (90.9 MB / 8)
    "mpnet_6l_w1a8_4ep_bf16_emb30_we2_att01_row": Row("mpnet", "embedding-mpnet-6l-w1a8", emb_weight=30.0,
                                                      att_weight=0.1,
                                                      quant=(("embedding_bits", 2), ("groups", "row")),
                                                      qat=(("bf16", True), ("epochs", 4.0), ("eval_steps", 479),
                                                           ("warmup_epochs", 0.67)),
                                                      reuse_reduced="mpnet_6l_w1a8_4ep_bf16_emb30_att01"),
    # the bytes of the ternary word embedding spent on the FFN's up-projections instead (module_bits):
    # untrained, binarizing the 6-layer copy's up-projections alone costs 21.3 points of STS-B, ternary
    # ones 5.3; the attention 10.2 and 5.3, the down-projections 15.7 and 15.6 (the same 14.2 M weights
    # each; python benchmarks/embedding_sensitivity.py). Word embedding binary: a 10.5 MB file
    "mpnet_6l_w1a8_4ep_bf16_emb30_att01_row_ffn2": Row("mpnet", "embedding-mpnet-6l-w1a8", emb_weight=30.0,
                                                       att_weight=0.1,
                                                       quant=(("groups", "row"), ("module_bits", {"intermediate": 2})),
                                                       qat=(("bf16", True), ("epochs", 4.0), ("eval_steps", 479),
                                                            ("warmup_epochs", 0.67)),
                                                       reuse_reduced="mpnet_6l_w1a8_4ep_bf16_emb30_we2_att01_row"),
    # ffn2 with the attention's query, key and value projections ternary too (the output projection stays
    # binary: untrained, 2 bits give back 3.8, 4.2 and 0.95 points of STS-B for k, v and q, 0.76 for o; the
    # 18 ternary matrices fill the 11.36 MB budget to 18 KB), and its own FP32 copy trained for a whole epoch
    # (bf16) instead of half: the copy's STS-B still rose 0.44 in its last quarter epoch (86.56 -> 87.00)
    "mpnet_6l_w1a8_4ep_bf16_emb30_att01_row_ffn2_qkv2_copy1ep": Row(
        "mpnet", "embedding-mpnet-6l-mixed",
        quant=(("module_bits", {"intermediate": 2, "attention.attn.q": 2, "attention.attn.k": 2,
                                "attention.attn.v": 2}),),
        reduce=(("epochs", 1.0), ("bf16", True), ("eval_steps", 479))),
}
# the same from the same FP32 copy with the student's dropout off while it learns its bits (TrainConfig
# dropout 0; the copy trained with the model's 0.1): a binary student distilled from a deterministic teacher
# is held back by its weights rather than by overfitting, and its curve still rises as the rate decays
ROWS["mpnet_6l_w1a8_4ep_bf16_emb30_att01_row_ffn2_qkv2_copy1ep_drop0"] = replace(
    ROWS["mpnet_6l_w1a8_4ep_bf16_emb30_att01_row_ffn2_qkv2_copy1ep"], qat=(("dropout", 0.0),),
    reuse_reduced="mpnet_6l_w1a8_4ep_bf16_emb30_att01_row_ffn2_qkv2_copy1ep")

# the MiniLM pick with the student's dropout off, as the MPNet row above and the GLUE students gained
ROWS["minilm_w1a8_4ep_bf16_emb30_we2_att01_drop0"] = replace(
    ROWS["minilm_w1a8_4ep_bf16_emb30_we2_att01"],
    qat=ROWS["minilm_w1a8_4ep_bf16_emb30_we2_att01"].qat + (("dropout", 0.0),))


def commit() -> str:
    """HEAD, marked ``+dirty`` when tracked files differ from it (the code that ran is then not HEAD's)."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "-uno") else "")
    except OSError:
        return "unknown"


def best_and_curve(log: Path) -> tuple[dict | None, list[dict]]:
    """The best evaluation on the way (by STS-B Spearman) and every evaluation, from the stage's log."""
    evals = [r for r in map(json.loads, log.read_text().splitlines()) if "eval_stsb_spearman" in r]
    by_step = {r["step"]: r for r in evals}  # the final evaluation of the kept model repeats the last step's
    curve = [{"step": s, **{m: r[f"eval_{m}"] for m in ("stsb_spearman", "recall_at_1", "mrr")}}
             for s, r in by_step.items()]
    best = max(curve, key=lambda r: r["stsb_spearman"]) if curve else None
    return best, curve


def reduced_final(out: Path) -> dict | None:
    """The FP32 layer-reduced copy's scores at the end of its KD stage (None without that stage): what
    the binary stage starts from, so that the cost of the copy and the cost of the bits can be told apart."""
    log = out / "reduced" / "log.jsonl"
    if not log.exists():
        return None
    _, curve = best_and_curve(log)
    return curve[-1] if curve else None


def reused_from(out: Path) -> str | None:
    """The row whose finished FP32 reduced stage this run copied, or None when it trained its own."""
    mark = out / "reduced" / "copied_from.txt"
    return mark.read_text().strip() if mark.exists() else None


def with_corpus(recipe, tasks: tuple[str, ...], glue_dir):
    """``recipe`` training on the default corpus plus the training sentences of ``tasks`` (a file under
    runs/), for as many steps as its epochs take on the default corpus, the warm-up as many steps too."""
    import math

    from xtc.data.embedding import CORPUS_TASKS, default_corpus

    base = default_corpus(str(glue_dir))
    sentences = default_corpus(str(glue_dir), CORPUS_TASKS + tuple(tasks))  # the default sentences first
    file = RUNS / f"corpus-default+{'+'.join(tasks)}.txt"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    qat = recipe.qat
    steps = round(qat.epochs * math.ceil(len(base) / qat.batch_size))
    qat = replace(qat, max_steps=steps, warmup_epochs=qat.warmup_epochs * len(base) / len(sentences))
    print(f"[corpus] {len(base)} default sentences + {len(sentences) - len(base)} from {', '.join(tasks)}: "
          f"{steps} steps", flush=True)
    return replace(recipe, train_file=str(file), qat=qat)


def row_recipe(name: str, model: str, seed: int, args):
    """The recipe a row trains: its file under recipes/ with the row's changes applied."""
    import xtc
    from xtc.recipe import with_overrides

    row = ROWS[name]
    recipe = with_overrides(xtc.load_recipe(ROOT / "recipes" / f"{row.recipe}.yaml"), model=model, seed=seed,
                            glue_dir=str(args.glue_dir), train_file=args.train_file)
    if row.emb_weight is not None:
        recipe = replace(recipe, distill=replace(recipe.distill, emb_weight=row.emb_weight))
    if row.att_weight is not None:
        recipe = replace(recipe, distill=replace(recipe.distill, att_weight=row.att_weight))
    if row.qat:
        recipe = replace(recipe, qat=replace(recipe.qat, **dict(row.qat)))
    if row.reduce:
        recipe = replace(recipe, reduce=replace(recipe.reduce, **dict(row.reduce)))
    if row.distill:
        recipe = replace(recipe, distill=replace(recipe.distill, **dict(row.distill)))
    if row.quant:
        recipe = replace(recipe, quant=replace(recipe.quant, **dict(row.quant)))
    if row.extra_corpus:
        recipe = with_corpus(recipe, row.extra_corpus, args.glue_dir)
    return recipe


def run_row(name: str, seed: int, args) -> dict:
    from bench_inference import _cpu_name, _isa  # the host as the speed results record it

    import xtc
    from xtc.data.embedding import load_embedding_task
    from xtc.pipeline import evaluate

    row = ROWS[name]
    started_at = commit()
    model = str(SHARED / "models" / "all-MiniLM-L6-v2") if row.family == "minilm" else str(args.mpnet_dir)
    common = {"task": "embedding", "row": name, "seed": seed, "model": Path(model).name, "commit": started_at,
              "cpu": _cpu_name(), "isa": " ".join(_isa()), "threads": __import__("torch").get_num_threads(),
              "command": f"python benchmarks/run_embedding.py --rows {name} --seeds {seed}"}
    if row.recipe is None:
        data = load_embedding_task(model, None, str(args.glue_dir))
        metrics = evaluate(model, None, data=data)["dev"]
        layers = json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"]
        return {**common, "weight_bits": 32, "activation_bits": None, "layers": layers, "epochs": 0,
                "metrics": metrics, "dev_final": metrics,
                "file_bytes": (Path(model) / "model.safetensors").stat().st_size, "file": "model.safetensors (FP32)"}
    recipe = row_recipe(name, model, seed, args)
    out = RUNS / f"embedding-{name}-{seed}"
    source = RUNS / f"embedding-{row.reuse_reduced}-{seed}" / "reduced"
    if row.reuse_reduced and not out.exists() and (source / "stage.json").exists():
        import shutil

        out.mkdir(parents=True)
        (out / "config.yaml").write_text(recipe.to_yaml())  # an unfinished run of this recipe, to resume
        shutil.copytree(source, out / "reduced", ignore=shutil.ignore_patterns("checkpoints"))
        (out / "reduced" / "copied_from.txt").write_text(f"{row.reuse_reduced}\n")
    results = xtc.compress(recipe, out, resume=out.exists())
    file = out / "packed" / "model.xtc.safetensors"
    if not file.exists():
        file = xtc.export(out, out / "packed")
    best, curve = best_and_curve(out / "quantized" / "log.jsonl")
    corpus = " + ".join(("default corpus",) + row.extra_corpus) if row.extra_corpus or not args.train_file else None
    return {**common, "weight_bits": recipe.quant.weight_bits, "activation_bits": recipe.quant.activation_bits,
            "embedding_bits": recipe.quant.word_embedding_bits, "module_bits": recipe.quant.module_bits,
            "layers": results["num_layers"] or (6 if row.family == "minilm" else 12), "copied_layers": recipe.layers,
            "recipe": f"recipes/{row.recipe}.yaml", "epochs": results["epochs"], "steps": results["steps"],
            "train_wall_s": results["train_wall_s"], "sentences": corpus,
            # the kept checkpoint is the end of the budget (select_on last): metrics = dev_final
            "metrics": results["compressed"], "dev_final": results["compressed"], "best_dev": best, "curve": curve,
            "teacher": results["teacher"], "emb_weight": recipe.distill.emb_weight,
            "sim_weight": recipe.distill.sim_weight,
            "att_weight": recipe.distill.att_weight, "bf16": recipe.qat.bf16, "weight_groups": recipe.quant.groups,
            "learning_rate": recipe.qat.learning_rate, "latent_lr_scale": recipe.qat.latent_lr_scale,
            "warmup_epochs": recipe.qat.warmup_epochs,
            "dropout": recipe.qat.dropout,  # the student's in the binary stage; None = the model's own (0.1)
            # the row whose reduced stage was copied; None when this run trained its own (no such run folder)
            "reduced_stage_from": reused_from(out), "reduced_final": reduced_final(out),
            "file_bytes": file.stat().st_size,
            "file": "model.xtc.safetensors (packed, default options)"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), metavar="ROW")
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--mpnet-dir", default=str(Path.home() / ".cache" / "xtc-models" / "all-mpnet-base-v2"))
    ap.add_argument("--glue-dir", default=str(SHARED / "glue"))
    ap.add_argument("--train-file", default=None, help="sentences, one per line (default: the GLUE corpus)")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.rows:
            target = RESULTS / f"{name}-{seed}.json"
            if target.exists():
                print(f"[skip] {target.name} exists", flush=True)
                continue
            print(f"[run] {name} seed {seed}", flush=True)
            result = run_row(name, seed, args)
            target.write_text(json.dumps(result, indent=1) + "\n")
            print(f"[done] {target.name}: {result['metrics']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
