#!/usr/bin/env bash
# Train the shipped default model (`small` preset, motion-aware) on the radar events and package
# it to models/weights/small-v3 (weights, ONNX codec, model.yaml, slim resumable checkpoints).
#
#   scripts/train_default.sh                 # CPU (runs/ holds the runs)
#   RESUME=1 scripts/train_default.sh        # continue every stage from runs/<stage>/checkpoint.pt
#   DEVICE=cuda THREADS=8 scripts/train_default.sh
#   MAX_MINUTES=40 scripts/train_default.sh  # stop each stage after 40 min (it checkpoints)
#
# small-v3 keeps small-v2's VAE and warm-starts its denoiser from small-v2's (both taken from
# git history into runs/ when missing; small-v2's own recipe is in that commit's copy of this
# script). The VAE stage below retrains the VAE only with TRAIN_VAE=1.
#
# THREADS=1 is the default because on the shared 2-core training machine one thread was ~10x
# faster than two (OpenMP threads waiting for each other while other processes hold the cores).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-1}
SEED=${SEED:-0}
VAE_STEPS=${VAE_STEPS:-5000}
# the LDM step count continues from the warm start's (small-v2: 7300); its cosine schedule ends
# at LDM_STEPS (the shipped run stopped at its --max-minutes before, see the model card)
LDM_STEPS=${LDM_STEPS:-11700}
ALIGNMENT_STEPS=${ALIGNMENT_STEPS:-2500}
# the denoiser to warm-start from: a model folder of the small architecture
INIT_FROM=${INIT_FROM:-runs/small-v2}
SMALL_V2_COMMIT=c8f02da
WEIGHTS=${WEIGHTS:-models/weights/small-v3}

common=(--config small --device "$DEVICE" --threads "$THREADS" --checkpoint-every-s 180)
if [[ -n "${RESUME:-}" ]]; then common+=(--resume); fi
if [[ -n "${MAX_MINUTES:-}" ]]; then common+=(--max-minutes "$MAX_MINUTES"); fi

# 0. small-v2 (the warm start, and its VAE checkpoint) from the last commit that shipped it
if [[ ! -f "$INIT_FROM/model.yaml" ]]; then
  mkdir -p runs
  git archive "$SMALL_V2_COMMIT" models/weights/small-v2 | tar -x -C runs --strip-components=2
fi
if [[ ! -d runs/vae ]]; then cp -r "$INIT_FROM/checkpoints/vae" runs/vae; fi

# 1. frame-wise VAE: 128 px crops of every training frame, adversarial loss from 60 % of the steps
if [[ -n "${TRAIN_VAE:-}" ]]; then
  nowcast train vae "${common[@]}" --seed "$SEED" --out runs/vae \
      --steps "$VAE_STEPS" --batch-size 8 --crop-px 128 --disc-start-fraction 0.6
fi

# 2. latent diffusion, motion-aware (small-v3): a window cache of 56 random 7 + 12 frame windows
#    per event group (320 px crops, random flip/rotation, their Lucas-Kanade extrapolation
#    nowcasts encoded beside them), random 256 px sub-crops per batch; warm-started from the
#    small-v2 denoiser (the extrapolation input channels start at zero)
nowcast train ldm "${common[@]}" --seed $((SEED + 3)) --out runs/ldm --vae runs/vae \
    --init-from "$INIT_FROM" --set diffusion.extrapolation=true --set max_grid_px=256 \
    --cache-windows 56 --val-cache-windows 12 --cache-crop-px 320 --crop-px 256 \
    --batch-size 4 --steps "$LDM_STEPS" --lr 1e-3 --ema-decay 0.995

# 3. knowledge alignment on the LDM run's window cache: it reads what the denoiser reads (the
#    scaled residual from the extrapolation latents, and those latents)
nowcast train alignment "${common[@]}" --seed "$SEED" --out runs/alignment --ldm runs/ldm \
    --steps "$ALIGNMENT_STEPS" --batch-size 8 --crop-px 256 --ema-decay 0.995

# 4. the model folder: safetensors (EMA denoiser and alignment), model.yaml, ONNX codec
nowcast train package --vae runs/vae --ldm runs/ldm --alignment runs/alignment \
    --weights "$WEIGHTS" --version 3 --checkpoints vae alignment  # the LDM one is too large

# 5. the intensity readout the guidance steers with (small-v3.5): fitted on what the folder's own
#    decoder makes of encoded radar frames and of the model's unsteered and steered forecasts;
#    it switches the folder to `diffusion.guidance: readout`
nowcast train readout --weights "$WEIGHTS" --threads "$THREADS"
