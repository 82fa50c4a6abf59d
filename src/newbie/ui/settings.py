"""What `newbie ui` passes to the page: environment variables, because `streamlit run` owns the command line
and Streamlit's AppTest runs the page without one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from newbie.ui.gallery import default_data_dir

ENV_MODEL = "NEWBIE_UI_MODEL"  # model folder; unset = the embedded demo model
ENV_DATA_DIR = "NEWBIE_UI_DATA_DIR"  # gallery folder
ENV_DEVICE = "NEWBIE_UI_DEVICE"  # cpu or cuda; unset = cuda when available


@dataclass(frozen=True)
class UISettings:
    model: str | None
    data_dir: Path
    device: str | None

    @classmethod
    def from_env(cls) -> "UISettings":
        return cls(
            model=os.environ.get(ENV_MODEL) or None,
            data_dir=Path(os.environ.get(ENV_DATA_DIR) or default_data_dir()).expanduser(),
            device=os.environ.get(ENV_DEVICE) or None,
        )

    def env(self) -> dict[str, str]:
        out = {ENV_DATA_DIR: str(self.data_dir)}
        if self.model:
            out[ENV_MODEL] = self.model
        if self.device:
            out[ENV_DEVICE] = self.device
        return out
