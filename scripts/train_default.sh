#!/usr/bin/env bash
# Train the shipped default model (`small` preset) on the radar events and package it to
# models/weights/small-v2 (weights, ONNX codec, model.yaml, slim resumable checkpoints).
#
#   scripts/train_default.sh                 # CPU, from scratch (runs/ holds the runs)
#   RESUME=1 scripts/train_default.sh        # continue every stage from runs/<stage>/checkpoint.pt
#   DEVICE=cuda THREADS=8 scripts/train_default.sh
#   MAX_MINUTES=40 scripts/train_default.sh  # stop each stage after 40 min (it checkpoints)
#
# To continue from what the model folder holds: the VAE and alignment from its slim checkpoints,
#   mkdir -p runs && cp -r models/weights/small-v2/checkpoints/* runs/
#   nowcast train vae --config small --out runs/vae --resume --steps N ...
# and the LDM approximately from its EMA weights (Adam restarts; the step count continues):
#   nowcast train ldm --config small --out runs/ldm-more --vae runs/vae \
#       --init-from models/weights/small-v2 --steps N --seed 1 --cache-crops 12 --val-cache-crops 2
#
# THREADS=1 is the default because on the shared 2-core training machine one thread was ~10x
# faster than two (OpenMP threads waiting for each other while other processes hold the cores).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-1}
SEED=${SEED:-0}
VAE_STEPS=${VAE_STEPS:-5000}
LDM_ABSOLUTE_STEPS=${LDM_ABSOLUTE_STEPS:-2600}
# phase 2b continues the step count of 2a; its cosine schedule spans LDM_STEPS, and the shipped
# run stopped (at its --max-minutes) at LDM_UNTIL_STEP
LDM_STEPS=${LDM_STEPS:-7600}
LDM_UNTIL_STEP=${LDM_UNTIL_STEP:-7300}
ALIGNMENT_STEPS=${ALIGNMENT_STEPS:-2500}
WEIGHTS=${WEIGHTS:-models/weights/small-v2}

common=(--config small --device "$DEVICE" --threads "$THREADS" --checkpoint-every-s 180)
if [[ -n "${RESUME:-}" ]]; then common+=(--resume); fi
if [[ -n "${MAX_MINUTES:-}" ]]; then common+=(--max-minutes "$MAX_MINUTES"); fi

# 1. frame-wise VAE: 128 px crops of every training frame, adversarial loss from 60 % of the steps
nowcast train vae "${common[@]}" --seed "$SEED" --out runs/vae \
    --steps "$VAE_STEPS" --batch-size 8 --crop-px 128 --disc-start-fraction 0.6

# 2. latent diffusion on 256 px crops encoded once (12 crop sequences per training event), in
#    two phases, as the shipped model was trained: first the plain latents (2a), then, warm-started
#    from those weights, the residual parameterisation of the preset (2b: future - last past
#    latent), on a latent cache drawn with seed 1
nowcast train ldm "${common[@]}" --seed "$SEED" --out runs/ldm-absolute --vae runs/vae \
    --steps "$LDM_ABSOLUTE_STEPS" --batch-size 4 --crop-px 256 --cache-crops 12 --val-cache-crops 2 \
    --ema-decay 0.995 --set diffusion.predict_residual=false
nowcast train package --vae runs/vae --ldm runs/ldm-absolute --weights runs/ldm-absolute-model \
    --no-export
nowcast train ldm "${common[@]}" --seed $((SEED + 1)) --out runs/ldm --vae runs/vae \
    --steps "$LDM_STEPS" --until-step "$LDM_UNTIL_STEP" --batch-size 4 --crop-px 256 \
    --cache-crops 12 --val-cache-crops 2 --ema-decay 0.995 \
    --init-from runs/ldm-absolute-model --set diffusion.predict_residual=true

# 3. knowledge alignment on the first LDM phase's latent cache (it reads noisy absolute latents,
#    whatever the denoiser's parameterisation)
nowcast train alignment "${common[@]}" --seed "$SEED" --out runs/alignment --ldm runs/ldm-absolute \
    --steps "$ALIGNMENT_STEPS" --batch-size 8 --crop-px 256 --ema-decay 0.995

# 4. the model folder: safetensors (EMA denoiser and alignment), model.yaml, ONNX codec
nowcast train package --vae runs/vae --ldm runs/ldm --alignment runs/alignment \
    --weights "$WEIGHTS" --checkpoints vae alignment  # the LDM one (144 MB) is too large
