"""One line per configuration field of every experiment, for `jaxicl run EXPERIMENT --help`.

Fields shared by several experiments are described once; a test checks that every field of
every experiment has a line here.
"""

_TRAINING = {
    "d": "input dimension x ∈ R^d",
    "context_len": "context length L (examples per prompt)",
    "noise_var": "label noise variance σ² (context and query)",
    "heads": "head counts H, comma-separated (one group each)",
    "n_members": "ensemble members (random inits) per head count",
    "steps": "optimizer steps",
    "record_every": "steps between records",
    "chunk_steps": "steps per checkpointed chunk (a kill loses at most one)",
    "batch_size": "sampled prompts per step",
    "learning_rate": "Adam learning rate",
    "init_scale": "standard deviation of the initial weights (> 0)",
    "eval_prompts": "prompts of the Monte Carlo population loss",
    "seed": "root random seed, in [0, 2**63)",
}

FIELD_HELP = {
    "paired-heads": _TRAINING
    | {"eval_lengths": "context lengths L of the length-generalization curve"},
    "overlapping-tasks": {k: v for k, v in _TRAINING.items() if k != "d"},  # d = 6 is the task
    "task-allocation": {
        "d": "input dimension, split into n_tasks disjoint blocks",
        "n_tasks": "regression tasks n (one block each)",
        "context_len": "context length L of the reduced loss",
        "heads": "head counts H, comma-separated",
        "flow": "reduced flow: weights (gradient flow on the attention weights, plain SGD's "
        "clock) or euclidean (gradient flow of ℓ on (Ω, M); see preset euclidean-flow)",
        "schemes": "init schemes, comma-separated: balanced, random-positive, random-sign, "
        "chen-code",
        "n_seeds": "seeds per random init scheme and H (the balanced init is run once)",
        "init_scale": "init scale s of ω, μ",
        "init_spread": "c in random-positive's ω, μ = s(1 + c·U(0, 1))",
        "horizon": "shortest horizon of the factorized model (the flow's time)",
        "horizon_cap": "longest horizon: the factorized model runs 2.5× the probes' warm-up, "
        "at most this",
        "horizon_merged": "horizon of the merged model (random-sign)",
        "dt_factorized": "Euler step of the factorized model (for the weights' flow: the SGD "
        "learning rate)",
        "dt_merged": "Euler step of the merged model",
        "n_records": "records per run (must divide the steps)",
        "warmup_scales": "init scales of the warm-up-against-scale panel, comma-separated",
        "separation_lengths": "context lengths of the single- vs multi-head ratio",
        "separation_prompts": "Monte Carlo prompts of the full model's ratio",
        "seed": "root random seed, in [0, 2**63)",
    },
    "full-vs-reduced": {
        "d": "input dimension, split into n_tasks disjoint blocks",
        "n_tasks": "regression tasks n (one block each)",
        "heads": "head count H",
        "context_lens": "context lengths L, comma-separated (one set of runs each)",
        "batches": "prompts per step B of the full model and the sampled ansatz flow",
        "exact_batch": "prompts per step of the exact flow (with control variates)",
        "n_seeds": "random-positive inits, shared by all dynamics",
        "init_scale": "init scale s of ω, μ",
        "init_spread": "c in ω, μ = s(1 + c·U(0, 1))",
        "parametrization": "factorized (Q, K, V, O from a balanced start) or merged (W, U)",
        "horizon": "steps × learning rate of every run (plain SGD's clock)",
        "dt": "the SGD learning rate of every dynamics (one step each)",
        "n_records": "records per run (must divide the steps)",
        "eval_prompts": "Monte Carlo prompts of each final loss",
        "seed": "root random seed, in [0, 2**63)",
        "alloc_d": "allocation check: input dimension (the full model's size)",
        "alloc_context_len": "allocation check: context length L",
        "alloc_init_scale": "allocation check: init scale s of the random-positive inits",
        "alloc_init_spread": "allocation check: c in ω, μ = s(1 + c·U(0, 1))",
        "alloc_members": "allocation check: members (each its own prompts)",
        "alloc_batch": "allocation check: prompts per member and step",
        "alloc_horizon": "allocation check: steps × learning rate (full model, weights' flow)",
        "alloc_dt": "allocation check: the SGD learning rate",
        "alloc_euclidean_horizon": "allocation check: horizon of the Euclidean flow (own clock)",
        "alloc_euclidean_dt": "allocation check: Euler step of the Euclidean flow",
    },
    "feature-learning": {
        "d": "input dimension",
        "k": "features per neuron output (W is k × k)",
        "n_particles": "particles M of the mean-field measure",
        "activation": "sigmoid, tanh or relu",
        "teacher_neurons": "neurons of the teacher MLP",
        "teacher_scale": "scale of the teacher's output weights",
        "input_law": "gaussian or spherical inputs",
        "a_scale": "scale of the particles' initial output weights",
        "n_inputs": "training inputs (a fixed sample)",
        "n_eval_inputs": "held-out inputs of the recorded losses",
        "learning_rate": "Euler step η of the particle flow",
        "steps": "Euler steps",
        "record_every": "steps between records",
        "n_seeds": "seeds of the static (two-timescale) flow",
        "attention_seeds": "seeds of the jointly trained W runs (≤ n_seeds)",
        "attention_ratios": "learning-rate ratios of W to the particles, comma-separated",
        "success_threshold": "success: L < threshold × L of the constant predictor",
        "stall_tolerance": "a static run above the threshold has stalled when its dissipation "
        "−dL/dt times its flow time is below this × L_c",
        "perturbation_size": "size of the saddle-escape perturbations",
        "perturb_every": "steps between perturbations",
        "birth_death_rate": "rate of the birth–death moves",
        "escape_atoms": "atoms of the split-atoms saddle (its features have full rank from k)",
        "escape_particles_per_atom": "particles at each atom of the split-atoms runs",
        "escape_displacements": "split sizes ε of the escape runs, comma-separated (ε = 0 is "
        "always run as the reference)",
        "escape_seeds": "independent splits per ε",
        "escape_steps": "Euler steps of the escape runs",
        "escape_drop": "escaped: L below the ε = 0 run by this × L_c",
        "mean_field_sizes": "particle counts M of the mean-field convergence study",
        "mean_field_seeds": "independent initial draws per M of that study (≥ 3: the spread "
        "over them is the measured fluctuation)",
        "mean_field_steps": "Euler steps of that study",
        "prompt_lengths": "token pairs n per prompt of the in-context runs, comma-separated "
        "(0: n = ∞, the population loss; must be included)",
        "prompts_per_step": "fresh prompts per Euler step of the in-context runs",
        "in_context_seeds": "seeds of the in-context runs",
        "in_context_joint_ratio": "0: none; > 0: also run the in-context runs with W trained "
        "jointly at this learning-rate ratio",
        "seed": "root random seed, in [0, 2**63)",
    },
}
