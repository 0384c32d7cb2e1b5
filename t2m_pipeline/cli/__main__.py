from t2m_pipeline.cli import main

main()
