import sys
from pathlib import Path

# tests/strategies.py and friends are imported as top-level helper modules.
sys.path.insert(0, str(Path(__file__).parent))
