import jax
import pytest

jax.config.update("jax_enable_x64", True)

# The unit tests that cost the most (`pytest --durations`): each compiles a whole experiment's
# training step or evaluation, or repeats a property the unit suite checks at another model,
# order, solver or adjoint (the exact NFE: Euler, Heun, Midpoint and Dopri5 here; Bosh3, Tsit5
# and Dopri8 in `make slow`). They run in `make slow` (`-m slow`), so that `make unit` stays quick
# between changes; `make test` runs both. A test listed here that no longer exists is an error.
SLOW = {
    "tests/test_physionet_experiment.py": (
        "test_problem_solves_every_posterior_sample_on_the_grid",
        "test_samples_are_sample_major_and_test_keys_are_fixed_per_patient",
        "test_float32_training_stays_float32_with_float64_enabled",
        "test_metrics_cover_every_test_patient_with_a_partial_last_batch",
        "test_a_training_step_lowers_the_loss_on_a_fixed_batch[none]",
        "test_encoder_runs_the_gru_backwards_over_time",
        "test_dynamics_init_is_the_config_field[haiku]",
        "test_dynamics_init_is_the_config_field[lecun]",
        "test_patient_mse_is_each_patients_own_mse",
        "test_an_unobserved_time_point_leaves_the_gru_state_unchanged",
        "test_test_mse_kl_and_loglik_do_not_depend_on_the_loss_batch",
    ),
    "tests/test_solver_heuristics.py": (
        "test_steer_moves_the_training_end_time_and_nothing_else",
        "test_steer_training_loss_solves_to_the_drawn_end_time_and_evaluation_to_t1",
        "test_the_gradient_matches_finite_differences_on_a_fixed_grid",
        "test_error_estimate_is_the_sum_over_the_accepted_steps_of_a_hand_stepped_solver",
    ),
    "tests/test_taylor_mode.py": (
        "test_matches_nested_jvp_and_jet[mlp_tanh-8]",
        "test_matches_nested_jvp_and_jet[mlp_sigmoid-8]",
        "test_matches_nested_jvp_and_jet[mlp_softplus-8]",
        "test_solve_r3_gradient_matches_jet",
        "test_solve_r3_matches_jet",
        # the fields that cost the most to compile (FFJORD's im2col convolution, a pytree state, the
        # latent ODE's MLP), every order; the unit suite keeps the small MLPs and the MNIST field
        *(f"test_matches_nested_jvp_and_jet[{name}-{k}]" for name in ("conv_im2col", "dict", "latent")
          for k in range(1, 9)),
        "test_matches_nested_jvp_and_jet[mnist-1]",
        "test_conv_primitive",
        "test_flax_conv_module_directly",
    ),
    "tests/test_precision.py": (
        "test_float32_parameters_are_judged_in_float64_exactly_as_a_float64_model_holding_their_values",
        "test_training_in_float32_keeps_float32_when_float64_is_enabled",
    ),
    "tests/test_solve.py": (
        "test_nfe_is_exact[False-bosh3-None]",
        "test_nfe_is_exact[False-bosh3-0.001]",
        "test_nfe_is_exact[False-bosh3-1.4e-08]",
        "test_nfe_is_exact[False-tsit5-None]",
        "test_nfe_is_exact[False-tsit5-0.001]",
        "test_nfe_is_exact[False-tsit5-1.4e-08]",
        "test_nfe_is_exact[False-dopri8-None]",
        "test_nfe_is_exact[False-dopri8-0.001]",
        "test_nfe_is_exact[False-dopri8-1.4e-08]",
        "test_nfe_is_exact[True-bosh3-None]",
        "test_nfe_is_exact[True-bosh3-0.001]",
        "test_nfe_is_exact[True-bosh3-1.4e-08]",
        "test_nfe_is_exact[True-tsit5-None]",
        "test_nfe_is_exact[True-tsit5-0.001]",
        "test_nfe_is_exact[True-tsit5-1.4e-08]",
        "test_nfe_is_exact[True-dopri8-None]",
        "test_nfe_is_exact[True-dopri8-0.001]",
        "test_nfe_is_exact[True-dopri8-1.4e-08]",
        "test_rk_matches_quadrature[1-dopri8]",
        "test_rk_matches_quadrature[2-tsit5]",
        "test_rk_matches_quadrature[2-dopri8]",
        "test_rk_matches_quadrature[3-tsit5]",
        "test_rk_matches_quadrature[3-dopri8]",
        "test_rk_matches_quadrature[4-tsit5]",
        "test_rk_matches_quadrature[4-dopri8]",
        "test_regulariser_sees_only_its_part[0-<lambda>-<lambda>]",
        "test_recursive_checkpoints_follow_the_memory_rule_and_leave_the_gradient_alone",
        "test_rk_gradient_matches_finite_differences[None-recursive]",
        "test_rk_gradient_matches_finite_differences[3-backsolve]",
        "test_rk_gradient_matches_finite_differences[2-backsolve]",
        "test_rk_matches_quadrature[1-tsit5]",
        "test_rk_gradient_matches_finite_differences[3-recursive]",
        "test_rk_gradient_matches_finite_differences[None-backsolve]",
    ),
    "tests/test_cli_and_toy.py": (
        "test_toy_nfe_is_null_where_the_solver_runs_out_of_steps",
    ),
    "tests/test_mnist.py": (
        "test_one_step_lowers_loss_on_fixed_batch[rnode-kw2]",
        "test_one_step_lowers_loss_on_fixed_batch[taylor-kw1]",
        "test_penalty_values_match_quadrature_of_a_dense_solution",
        "test_one_step_lowers_loss_on_fixed_batch[none-kw0]",
        "test_model_shapes_and_size",
    ),
    "tests/test_sampled_rk.py": (
        "test_mean_over_draws_is_the_integral_along_the_interpolant[2]",
        "test_sampled_and_exact_estimators_side_by_side",
        "test_the_gradient_matches_finite_differences_on_a_fixed_grid",
        "test_mean_over_draws_is_the_integral_along_the_interpolant[3]",
    ),
    "tests/test_cnf.py": (
        "test_regularizers_see_z_only",
        "test_conv_field_starts_at_zero",
        "test_image_shaped_flow_closed_form",
        "test_blocked_exact_trace_of_an_image_flow_is_the_closed_form[5]",
        "test_linear_flow_hutchinson_uses_one_probe[gaussian]",
        "test_blocked_exact_trace_of_an_image_flow_is_the_closed_form[1]",
        "test_blocked_exact_trace_of_an_image_flow_is_the_closed_form[16]",
        "test_blocked_exact_trace_of_an_image_flow_is_the_closed_form[40]",
        "test_linear_flow_gradient_matches_closed_form",
        "test_sample_then_log_prob_consistent",
    ),
    "tests/test_ffjord_experiments.py": (
        "test_ffjord2d_initial_nll_is_that_of_the_standard_normal",
        "test_tabular_training_uses_the_hutchinson_probe_and_evaluation_the_exact_trace",
        "test_the_regularisers_see_z_only[ffjord_tabular]",
        "test_the_regularisers_see_z_only[ffjord2d]",
    ),
    "tests/test_ffjord_baselines.py": (
        "test_mnist_gaussian_baseline_is_the_logit_space_gaussian_in_bits_per_dim",
        "test_ffjord2d_densities_without_an_exact_density_report_none",
        "test_ffjord2d_metrics_hold_the_data_nll_and_the_gap",
    ),
    "tests/test_taylor.py": (
        "test_jet_matches_nested_jvp[5-tanh]",
        "test_jet_matches_nested_jvp[5-sigmoid]",
        "test_jet_matches_nested_jvp[5-softplus]",
        "test_jet_matches_nested_jvp[6-tanh]",
        "test_jet_matches_nested_jvp[6-sigmoid]",
        "test_jet_matches_nested_jvp[6-softplus]",
    ),
    "tests/test_plots.py": (
        "test_density_panels_three_panels_per_model_and_checks",
    ),
}


# The longest tests of `make slow` (each a minute or more of forced-device subprocesses on the project's
# 2-core CPU) run first: two workers then share out the rest, instead of one of them starting a long
# test while the other has nothing left to do.
LONG_FIRST = (
    "tests/test_distributed.py::test_two_processes_match_one_process_on_four_devices",
    "tests/test_parallel.py::test_eval_does_not_depend_on_the_device_count",
    "tests/test_parallel.py::test_four_host_devices_match_one",
    "tests/test_parallel.py::test_sharded_toy_stays_with_the_one_device_run_for_300_steps",
)


def pytest_collection_modifyitems(config, items):
    listed = {f"{path}::{name}" for path, names in SLOW.items() for name in names}
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)
    rank = {nodeid: i for i, nodeid in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))  # stable: the rest keep their order
    # a test named on the command line (path::name) leaves the rest of its file uncollected
    if any("::" in str(arg) for arg in config.args):
        return
    collected = {item.nodeid for item in items}
    files = {nodeid.split("::")[0] for nodeid in collected}
    stale = sorted(n for n in listed | set(LONG_FIRST) if n.split("::")[0] in files and n not in collected)
    if stale:
        raise pytest.UsageError(f"tests/conftest.py: SLOW or LONG_FIRST lists tests that do not exist: {stale}")


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
