#!/usr/bin/env bash
# The paper's full evaluation protocol on tu-berlin-40 (+ the 6,756 photos as distractors), from cached features.
# Prerequisites (once; the extraction takes ~5-8 minutes on 2 cores):
#   manage.py import_collection ../shared/data/tu-berlin-40 --name tu-berlin-40 --kind sketches
#   manage.py import_collection ../shared/data/photos --name photos --kind photos
#   manage.py extract_features --collection tu-berlin-40 --collection photos --extractor mobilenet_v1
# Usage: benchmarks/paper_protocol.sh [EXTRACTOR]     (time it with: time benchmarks/paper_protocol.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
M=".venv/bin/python manage.py"
C="--collection tu-berlin-40 --extractor ${1:-mobilenet_v1}"
echo "### 1. evaluate --scan"; $M evaluate $C --scan
echo "### 2. evaluate --scan --distractors photos"; $M evaluate $C --scan --distractors photos
echo "### 3. evaluate --scan --queries paper --distractors photos"; $M evaluate $C --scan --queries paper --distractors photos
echo "### 4. real LSH, paper grid"; $M lsh_sweep --family real --grid "3x5,3x3,5x2,4x2,7x2,8x2,5x1" $C --distractors photos
echo "### 5. binary LSH, paper grid"; $M lsh_sweep --family binary --grid "3x6,3x5,4x4,5x5,3x1,5x2" $C --distractors photos
echo "### 6. ours: binary centred, multi-probe"
$M lsh_sweep --family binary --center --grid "3x6,8x6,8x8,10x10,16x12" --probes 0,1,2 $C --distractors photos
echo "### 7. ours: both families centred, real w=1"
$M lsh_sweep --family real --family binary --center --w 1 --grid "7x2,3x6,8x8,10x10" --probes 0,2 $C --distractors photos
echo "### 8. class analysis"; $M class_analysis $C --distractors photos
