"""The offline half of tlcut: export, cuts, surgery, compile, bench, plan: one file per step."""
