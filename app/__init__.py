"""The two apps, shipped in the wheel as ``blockmask_app`` (start them with ``blockmask app streamlit``
or ``blockmask app gradio``; from a checkout, ``streamlit run app/main.py`` / ``python app/gradio_demo.py``)."""
