#!/usr/bin/env bash
# electra-pull-data: data/ as data.dvc pins it, from the DVC remote, into the code folder
# (a volume in docker/compose.yaml, shared by the workers). DVC_REMOTE_URL: any URL the
# image's DVC reads (a folder such as a mounted remote, http(s)://); unset, the remote
# .dvc/config names. Run by compose's `data` service before the workers start.
set -euo pipefail
cd "${ELECTRA_CODE_DIR:?ELECTRA_CODE_DIR is the image code folder}"
if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
    dvc remote add --local --force --default compose "${DVC_REMOTE_URL}"
fi
# --force: replace what an older data.dvc left in the volume, without asking.
dvc pull --force data.dvc
echo "data/ at $(grep -m1 'md5:' data.dvc | awk '{print $2}') from ${DVC_REMOTE_URL:-the .dvc/config remote}"
