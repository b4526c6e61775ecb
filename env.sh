# Source this to build with cargo by hand: `source env.sh && cargo build`.
CACHE=${TRAJFLOW_CACHE:-$HOME/.cache/trajflow}
export LIBTORCH=$(ls -d $CACHE/venv/lib/python3*/site-packages/torch 2>/dev/null | head -1)
export LIBTORCH_BYPASS_VERSION_CHECK=1
export LD_LIBRARY_PATH=$LIBTORCH/lib:$LD_LIBRARY_PATH
