#!/bin/sh
# test_classify.sh CLASSIFY RNNC GRAPH CKPT: the AOT example against
# `rnnc predict` (JIT) on the same names. Run by ctest (test_aot_example).
set -u
classify=$1 rnnc=$2 graph=$3 ckpt=$4
set -- Nguyen 'Ślusàrski' 'Groß' "O'Brien" 'Van der Berg' Dostoevsky Abe Kowalski
aot=$("$classify" "$@") || { echo "classify failed"; exit 1; }
jit=$("$rnnc" predict "$graph" "$ckpt" "$@") || { echo "rnnc predict failed"; exit 1; }
if [ "$aot" != "$jit" ]; then
  printf 'classify:\n%s\n\nrnnc predict:\n%s\n' "$aot" "$jit"
  exit 1
fi
stdin=$(printf '%s\n' "$@" | "$classify") || { echo "classify (stdin) failed"; exit 1; }
if [ "$stdin" != "$aot" ]; then
  printf 'classify from standard input:\n%s\n\nfrom arguments:\n%s\n' "$stdin" "$aot"
  exit 1
fi
top1=$("$classify" --top 1 Nguyen) || exit 1
[ "$(printf '%s\n' "$top1" | wc -l)" -eq 2 ] || { echo "--top 1: $top1"; exit 1; }
err=$("$classify" 'Maxa/B' 2>&1) && { echo "Maxa/B was classified: $err"; exit 1; }
case $err in
*"character '/' is not in the vocabulary"*) ;;
*) echo "Maxa/B: unexpected message: $err"; exit 1 ;;
esac
printf '%s\n' "$aot"
echo "classify (AOT) = rnnc predict (JIT)"
