"""Sessions on disk (core, no napari): a process killed while it autosaves leaves an openable session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from napari_cryo_openset.picks import make_picks
from napari_cryo_openset.session import Session, read_session, save_session

#: The writer: saves the session again and again (as the panel's autosave after every step),
#: each time with one more pick; prints its first save so the test knows when to kill it.
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from napari_cryo_openset.picks import make_picks
    from napari_cryo_openset.session import Session, save_session
    path = sys.argv[1]
    n = 10
    while True:
        picks = make_picks(np.arange(3 * n, dtype=float).reshape(n, 3), score=np.arange(n, dtype=float))
        save_session(path, Session(picks=picks, voxel_size=(10.0, 10.0, 10.0), threshold=float(n)))
        if n == 10:
            print("saved", flush=True)
        n += 1
""")


def test_a_process_killed_while_autosaving_leaves_an_openable_session(tmp_path):
    path = tmp_path / "work.cosession.json"
    first = make_picks(np.zeros((3, 3)), score=np.ones(3))
    save_session(path, Session(picks=first, voxel_size=(10.0, 10.0, 10.0), threshold=3.0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.05, 0.4, 1.0):  # killed at different moments of a save
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        session = read_session(path)  # never a half-written JSON: the last complete save, openable
        n = len(session.picks)
        assert n >= 10 and session.threshold is not None
        np.testing.assert_array_equal(session.picks["score"].to_numpy()[:10], np.arange(10.0))
