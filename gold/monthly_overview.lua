-- monthly_overview: money spent and time trained per month, side by side (SQL model over two
-- systems). Spending counts outgoing transactions (negative amounts); months with only one of
-- the two still get a row.
return {
  description = "Spending and training per month",
  sql = function(ref)
    return [[
      WITH spend AS (
        SELECT date_trunc('month', booked_on)::date AS month, -sum(amount) AS spent, count(*) AS transactions
        FROM ]] .. ref("bank.transactions") .. [[
        WHERE amount < 0
        GROUP BY 1),
      training AS (
        SELECT date_trunc('month', started_at)::date AS month,
               round(sum(duration_s) / 3600.0, 2) AS training_hours, count(*) AS workouts
        FROM ]] .. ref("fitness.activities") .. [[
        GROUP BY 1)
      SELECT month, coalesce(s.spent, 0) AS spent, coalesce(s.transactions, 0) AS transactions,
             coalesce(t.training_hours, 0) AS training_hours, coalesce(t.workouts, 0) AS workouts
      FROM spend s FULL JOIN training t USING (month)]]
  end,
}
